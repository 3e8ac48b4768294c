"""``workbench sweep``, ``compose`` and ``measure``: JSON shapes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workbench.cli import main
from workbench.commands.compose import assign
from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.vectors.build import from_prompts

SMALL = ["--n-prompts", "2", "--n-sentences", "2", "--n-neutral", "2", "--max-new-tokens", "3"]


@pytest.fixture(scope="module")
def files(
    tiny_model: Model, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cli-sweep")
    wed = from_prompts(tiny_model, " wedding", " ", [1]).save(folder / "wed.safetensors")
    love = from_prompts(tiny_model, "Love", "Hate", [2]).save(folder / "love.safetensors")
    empty = folder / "empty.txt"
    empty.write_text("\n\n")
    return {
        "model": str(tiny_model_dir),
        "wed": str(wed),
        "love": str(love),
        "empty": str(empty),
        "dir": str(folder),
    }


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_sweep_json(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out = Path(files["dir"]) / "sweep"
    argv = [
        "sweep",
        "--model",
        files["model"],
        "--vector",
        files["wed"],
        "--coeffs",
        "1,4",
        "--layers",
        "1,2",
        "--target-words",
        "wedding,bride",
        "--on-target",
        "builtin:wedding",
        "--effect",
        "target_words",
        "--n",
        "1",
        "--controls",
        "3",
        "--out",
        str(out),
        "--json",
        *SMALL,
    ]
    data = _json(capsys, argv)
    assert {"rows", "overshoot", "controls", "samples", "files"} <= set(data)
    for row in data["rows"]:
        assert len(row["specificity_ci"]) == 2
    for ctl in data["controls"]["by_layer"]:
        matched = ctl["matched"]
        assert matched["k"] == 3 and matched["kind"] == "word"
        assert len(matched["specificity"]["control_specificity"]) == 3
        ref = next(
            r for r in data["rows"] if r["layer"] == ctl["layer"] and r["coeff"] == ctl["coeff"]
        )
        assert ref["control_specificity"] == matched["specificity"]["control_specificity"]
        assert ref["specificity_status"] in ("specific", "generic")
    others = [r for r in data["rows"] if r["control_specificity"] is None]
    assert len(others) == len(data["rows"]) - 2  # one reference coefficient per layer
    assert len(data["rows"]) == 6 and len(data["overshoot"]) == 2
    row = data["rows"][0]
    for key in ("layer", "coeff", "coeff_norm_units", "effect", "effect_ci", "damage", "damage_ci"):
        assert key in row
    assert {"onset", "best", "breakdown", "diagnostics"} <= set(data["overshoot"][0])
    assert Path(data["files"]["report"]).is_file() and Path(data["files"]["csv"]).is_file()
    assert data["effect"]["kind"] == "target_words"
    # A second run into the same folder refuses rather than mixing two sweeps.
    assert "--resume" in _error(capsys, argv)


def test_compose_json(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "compose",
        "--model",
        files["model"],
        "--vector",
        files["wed"],
        "--coeff",
        "4",
        "--target-words",
        "wedding",
        "--vector",
        files["love"],
        "--coeff",
        "3",
        "--layer",
        "1",
        "--target-words",
        "love,happy",
        "--json",
        *SMALL,
    ]
    data = _json(capsys, [*argv, "--controls", "2"])
    assert [v["layer"] for v in data["vectors"]] == [1, 1]
    assert data["controls"]["k"] == 2 and data["controls"]["kind"] == ["word", "word"]
    assert [len(r) for r in data["controls"]["retention"]] == [2, 2]
    assert [len(r[1 - i]) for i, r in enumerate(data["controls"]["interference"])] == [2, 2]
    assert len(data["retention_ci"]) == 2 and len(data["verdicts"]) == 2
    assert all("with controls in its partners' place" in v for v in data["verdicts"] if "[" in v)
    assert [v["coeff"] for v in data["vectors"]] == [4.0, 3.0]
    assert len(data["retention"]) == 2
    assert len(data["interference"]) == 2 and len(data["interference"][0]) == 2
    assert len(data["cosine"]) == 2 and data["cosine"][0][1] is not None
    assert {"combined", "alone"} <= set(data["damage"])


def test_measure_json(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "measure",
        "--model",
        files["model"],
        "--vector",
        files["wed"],
        "--coeff",
        "4",
        "--on-target",
        "builtin:wedding",
        "--n",
        "0",
        "--json",
        *SMALL,
    ]
    data = _json(capsys, argv)
    assert data["kind"] == "measure" and data["effect_spec"]["kind"] == "on_target"
    assert {"unsteered", "steered", "random", "injection"} <= set(data)
    assert data["unsteered"]["effect"]["value"] == 1.0
    matched = data["matched_controls"]
    assert matched["k"] == 8 and matched["kind"] == "word"  # on by default
    assert len(matched["items"]) == 8 and all(i["prompt"].startswith(" ") for i in matched["items"])
    assert data["specificity"]["n_controls"] == 8
    assert data["specificity"]["status"] in ("specific", "generic")
    assert "of 8 control-word vectors" in data["specificity"]["verdict"]
    off = _json(capsys, [*argv, "--controls", "0"])
    assert off["matched_controls"]["k"] == 0 and off["specificity"]["n_controls"] == 0


def test_per_vector_options_follow_their_vector() -> None:
    assert assign([(1, "a"), (2, "b")], 2, "--coeff") == ["a", "b"]
    assert assign([(2, "b")], 2, "--layer") == [None, "b"]
    assert assign([(2, "a"), (2, "b")], 2, "--coeff") == ["a", "b"]  # all after the last vector
    assert assign(None, 3, "--layer") == [None, None, None]
    with pytest.raises(WorkbenchError, match="before any --vector"):
        assign([(0, "a")], 1, "--coeff")
    with pytest.raises(WorkbenchError, match="two --coeff"):
        assign([(1, "a"), (1, "b"), (2, "c")], 2, "--coeff")


def test_bad_inputs_give_one_line_errors(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(Path(files["dir"]) / "bad")
    base = ["sweep", "--model", files["model"], "--vector", files["wed"], "--out", out]
    assert "'x' is not a number" in _error(
        capsys, [*base, "--coeffs", "0,x", "--on-target", "builtin:wedding"]
    )
    err = _error(
        capsys, [*base, "--coeffs", "1", "--prompts", files["empty"], "--target-words", "w"]
    )
    assert "--prompts" in err and "no documents" in err
    err = _error(capsys, [*base, "--coeffs", "1", "--target-words", " , "])
    assert "--target-words is empty" in err
    err = _error(
        capsys, [*base, "--coeffs", "1", "--on-target", "builtin:wedding", "--max-ppl-ratio", "0.5"]
    )
    assert "max_ppl_ratio must be" in err
    err = _error(
        capsys,
        [*base, "--coeffs", "1", "--on-target", "builtin:wedding", "--min-distinct-ratio", "abc"],
    )
    assert "not a number" in err
    err = _error(capsys, [*base, "--coeffs", "1"])
    assert "no effect measure" in err
    err = _error(
        capsys,
        [
            "compose",
            "--model",
            files["model"],
            "--vector",
            files["wed"],
            "--coeff",
            "1",
            "--vector",
            files["love"],
            "--coeff",
            "2",
        ],
    )
    assert "has no metric" in err
    err = _error(capsys, ["measure", "--vector", files["wed"] + ".missing", "--coeff", "1"])
    assert "not found" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--controls", "-1"], "--controls must be at least 0"),
        (["--controls", "41"], "more than the 40 built-in control words"),
        (["--controls", "two"], "--controls 'two' is not a whole number"),
        (["--off-target", "builtin:wedding"], "on-target and off-target sentences are the same"),
    ],
)
def test_control_options_give_one_line_errors(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    base = ["--model", files["model"], "--on-target", "builtin:wedding", *extra]
    measure = ["measure", "--vector", files["wed"], "--coeff", "1", *base]
    assert message in _error(capsys, measure)
    out = str(Path(files["dir"]) / "bad-controls")
    sweep = ["sweep", "--vector", files["wed"], "--coeffs", "1", "--out", out, *base]
    assert message in _error(capsys, sweep)
