"""``workbench demo --quick`` end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.model.load import Model


def test_demo_quick_end_to_end(
    tiny_model: Model, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--model", str(tiny_model_dir), "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "[8/8] write the report" in captured.err  # progress per stage, with timings
    assert "Report:" in captured.out and str(out / "report.html") in captured.out
    data = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in data["stages"]][:2] == ["load model", "capture a built-in corpus"]
    assert len(data["stages"]) == 8 and all(s["seconds"] >= 0 for s in data["stages"])
    assert data["dictionaries"]["pca"]["n_components"] == 3
    assert data["candidates"], data.get("notes")
    assert Path(data["candidates"][0]["vector_path"]).is_file()
    assert data["sweep"]["overshoot"][0]["layer"] == 1
    assert data["sweep"]["controls"]["by_layer"][0]["injection"]["text"] == " wedding"
    assert len(data["compose"]["retention"]) == 2
    assert [v["layer"] for v in data["compose"]["vectors"]] == [1, 2]
    assert len(data["findings"]) >= 3
    page = (out / "report.html").read_text()
    assert page.count("Plotly.newPlot") == 3 and "Discovered candidates" in page
    for name in ("wedding", "wedding_random", "love_hate"):
        assert (out / "vectors" / f"{name}.safetensors").is_file()
    assert (out / "sweep" / "sweep.json").is_file()
