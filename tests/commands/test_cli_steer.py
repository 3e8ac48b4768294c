from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.model.load import Model
from workbench.vectors.vector import SteeringVector


@pytest.fixture(scope="module")
def vector_files(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("vectors")
    g = torch.Generator().manual_seed(0)
    aligned = SteeringVector({1: torch.randn(3, 64, generator=g)}, tiny_model.name, 64)
    direction = SteeringVector(
        {2: torch.randn(64, generator=g)}, tiny_model.name, 64, layer_norms={2: 8.0}
    )
    return [aligned.save(folder / "love.safetensors"), direction.save(folder / "dir.safetensors")]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["steer", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_has_prompt_plan_and_both_columns(
    vector_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--vector", str(vector_files[0]), "--coeff", "6", "--vector", str(vector_files[1])]
    args += ["--coeff", "-0.5", "--units", "raw", "--layer", "2", "--layer", "3"]
    args += ["--prompt", "I hate you because", "--n", "3", "--max-new-tokens", "6", "--json"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    result = json.loads(out)
    assert result["prompt"] == "I hate you because"
    assert [e["label"] for e in result["plan"]] == ["love.safetensors", "dir.safetensors"]
    assert [e["layers"] for e in result["plan"]] == [[2], [3]]
    assert [e["position"] for e in result["plan"]] == ["front", "all"]
    assert result["plan"][0]["coeff"] == 6.0 and result["plan"][1]["coeff"] == -0.5
    assert len(result["unsteered"]) == 3 and len(result["steered"]) == 3
    assert result["unsteered"] != result["steered"]
    assert result["settings"]["top_p"] == 0.3  # ActAdd defaults
    again = json.loads(_run(args, capsys)[1])
    assert again["unsteered"] == result["unsteered"] and again["steered"] == result["steered"]


def test_human_output_separates_the_columns(
    vector_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--vector", str(vector_files[0]), "--coeff", "4", "--prompt", "I love"]
    code, out, _ = _run([*args, "--n", "2", "--max-new-tokens", "4"], capsys)
    assert code == 0
    assert "Prompt: I love" in out and "love.safetensors x 4.0 at layer 1" in out
    assert out.count("unsteered:") == 2 and out.count("  steered:") == 2
    assert "--- sample 2 ---" in out


def test_bad_inputs_give_one_line_errors(
    vector_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(vector_files[0].read_bytes()[:-7])
    one = ["--vector", str(vector_files[0])]
    cases = [
        ([*one, "--coeff", "2", "--prompt", "  "], "prompt is empty"),
        ([*one, "--coeff", "nan", "--prompt", "Hi"], "not a finite number"),
        ([*one, "--coeff", "x", "--prompt", "Hi"], "is not a number"),
        ([*one, "--coeff", "2", "--layer", "9", "--prompt", "Hi"], "valid layers are 0..3"),
        ([*one, *one, "--coeff", "2", "--prompt", "Hi"], "give one --coeff per --vector"),
        ([*one, "--coeff", "1", "--coeff", "2", "--prompt", "Hi"], "give one --coeff per"),
        (["--vector", str(corrupt), "--coeff", "2", "--prompt", "Hi"], "bad.safetensors"),
        (
            ["--vector", str(tmp_path / "no.safetensors"), "--coeff", "2", "--prompt", "Hi"],
            "not found",
        ),
        ([*one, "--coeff", "2", "--units", "norm", "--prompt", "Hi"], "no residual norm"),
    ]
    for args, message in cases:
        code, out, err = _run([*args, "--max-new-tokens", "2"], capsys)
        assert code == 2, args
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("workbench steer: error:"), err
        assert message in err, (message, err)
