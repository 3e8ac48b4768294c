"""``measure``, ``sweep`` and ``compose`` with matched controls on the embedded model.

The model is loaded once (the session's ``default_model``) and handed to each verb instead of
loading it per call; everything else runs as on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workbench.cli import main
from workbench.model.load import Model
from workbench.vectors.build import from_prompts

pytestmark = pytest.mark.real_model

SMALL = [
    "--n-prompts", "3", "--n-sentences", "6", "--n-neutral", "3", "--max-new-tokens", "4",
    "--on-target", "builtin:wedding", "--target-words", "wedding,bride",
]  # fmt: skip


@pytest.fixture(scope="module")
def wedding(default_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("controls-real")
    return from_prompts(default_model, " wedding", " ", [6]).save(folder / "wed.safetensors")


@pytest.fixture(autouse=True)
def _one_model(default_model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    for verb in ("measure", "sweep", "compose"):
        monkeypatch.setattr(f"workbench.commands.{verb}.load_model", lambda *_a: default_model)


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_measure_compares_the_wedding_vector_with_control_words(
    wedding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["measure", "--vector", str(wedding), "--coeff", "4", "--n", "0", "--controls", "4"]
    data = _json(capsys, [*argv, *SMALL])
    matched = data["matched_controls"]
    assert matched["kind"] == "word" and matched["k"] == 4
    words = [i["prompt"] for i in matched["items"]]
    assert all(w.startswith(" ") and "wedding" not in w for w in words)
    # The wedding vector raises the wedding tokens' log-prob far more than any control word.
    assert matched["effect"]["measure"] == "target_logprob_shift:target"
    assert matched["effect"]["vector"] > max(matched["effect"]["controls"]) + 0.5
    assert matched["effect"]["beats"] == 4
    spec = data["specificity"]
    assert len(spec["control_specificity"]) == 4 and 0 < spec["p_value"] <= 1
    assert spec["status"] in ("specific", "generic") and spec["verdict"].startswith(spec["status"])


def test_sweep_rows_carry_specificity_with_controls(
    wedding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", "--vector", str(wedding), "--coeffs", "2,8", "--n", "0"]
    argv += ["--controls", "3", "--effect", "on_target", "--attention-prompts", "0"]
    data = _json(capsys, [*argv, "--out", str(tmp_path / "sweep"), *SMALL])
    assert all(len(r["specificity_ci"]) == 2 for r in data["rows"])
    matched = data["controls"]["by_layer"][0]["matched"]
    assert matched["k"] == 3 and len(matched["specificity"]["control_specificity"]) == 3
    report = (tmp_path / "sweep" / "report.html").read_text()
    assert "Specificity against matched controls" in report
    assert matched["specificity"]["verdict"].split(":")[0] in report


def test_compose_retention_with_controls_in_each_vectors_place(
    default_model: Model, wedding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    love = from_prompts(default_model, "Love", "Hate", [6]).save(tmp_path / "love.safetensors")
    argv = ["compose", "--vector", str(love), "--coeff", "4", "--target-words", "love,happy"]
    argv += ["--vector", str(wedding), "--coeff", "4", "--layer", "3"]
    argv += ["--target-words", "wedding,bride", "--n-prompts", "3", "--n-sentences", "3"]
    argv += ["--n-neutral", "3", "--controls", "3"]
    data = _json(capsys, argv)
    ctrl = data["controls"]
    assert ctrl["k"] == 3 and [len(r) for r in ctrl["retention"]] == [3, 3]
    assert len(ctrl["interference"][0][1]) == 3 and len(ctrl["interference"][1][0]) == 3
    assert len(data["verdicts"]) == 2
    for ci, r in zip(data["retention_ci"], data["retention"], strict=True):
        assert ci is None or ci[0] <= r <= ci[1]
