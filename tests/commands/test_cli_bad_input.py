"""Bad input to the CLI ends in one line on stderr and exit status 2, before any slow work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workbench.cli import main
from workbench.model.load import Model
from workbench.testing import planted_store
from workbench.vectors.vector import SteeringVector, _checksum


@pytest.fixture(scope="module")
def small_store(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "acts"
    planted_store(path, tiny_model, layer=1, n_docs=6, rows_per_doc=8)  # 48 rows
    return path


@pytest.fixture(scope="module")
def direction(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0))
    v = SteeringVector({2: t / t.norm()}, tiny_model.name, tiny_model.d_model, layer_norms={2: 8.0})
    return v.save(tmp_path_factory.mktemp("bad-input-vec") / "dir.safetensors")


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ([1, 2, 3], "not a workbench steering vector"),
        ("list-recipe", "'recipe' = .* not an object"),
        ("list-info", "'info' = .* not an object"),
    ],
)
def test_vector_info_with_bad_metadata(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, direction: Path, meta: object, match: str
) -> None:
    good = SteeringVector.load(direction)
    tensors = {f"layer.{k}": t for k, t in good.directions.items()}
    base = {"format": "workbench.steering_vector/1", "model": "m", "d_model": good.d_model}
    base |= {"site": "resid_pre", "method": "x", "checksum": _checksum(tensors)}
    if meta == "list-recipe":
        meta = {**base, "recipe": [["a", 1]]}
    elif meta == "list-info":
        meta = {**base, "info": ["separation"]}
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"workbench": json.dumps(meta)})
    assert re.search(match, _error(capsys, ["vector", "info", str(path)]))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (["--method", "sae", "--k", "8", "--param", "lr=abc"], "sae lr='abc' is not a number"),
        (["--method", "sae", "--k", "8", "--param", "n_steps=-3"], "n_steps=-3 must be >= 1"),
        (["--method", "ica", "--k", "4", "--param", "tol=x"], "ica tol='x' is not a number"),
        (["--method", "pca", "--k", "60"], "needs at least 61 rows"),
        (["--method", "sae", "--k", "100000"], "over 64 x d_model=64"),
    ],
)
def test_decompose_refuses_bad_params_and_k(
    capsys: pytest.CaptureFixture[str],
    small_store: Path,
    tmp_path: Path,
    params: list[str],
    match: str,
) -> None:
    argv = ["decompose", "--acts", str(small_store), "--layer", "1", "--no-loss"]
    assert match in _error(capsys, [*argv, *params, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_discover_refuses_a_huge_sae_before_the_model_loads(
    capsys: pytest.CaptureFixture[str],
    small_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workbench.model.load as load

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the parameters were checked")

    monkeypatch.setattr(load, "load_model", no_model)
    argv = ["discover", "--acts", str(small_store), "--layer", "1", "--method", "sae"]
    err = _error(capsys, [*argv, "--k", "100000", "--out", str(tmp_path / "d")])
    assert "over 64 x d_model=64" in err
    err = _error(capsys, [*argv, "--k", "8", "--param", "lr=abc", "--out", str(tmp_path / "d")])
    assert "lr='abc' is not a number" in err


@pytest.mark.parametrize("coeff", ["1e30", "-1e25", "3e38"])
def test_steer_refuses_a_coefficient_the_dtype_cannot_hold(
    capsys: pytest.CaptureFixture[str], direction: Path, coeff: str
) -> None:
    argv = ["steer", "--vector", str(direction), f"--coeff={coeff}", "--prompt", "I love"]
    err = _error(capsys, [*argv, "--n", "1", "--max-new-tokens", "2"])
    assert f"coefficient {float(coeff):g}" in err and "cannot hold" in err


def test_steer_warns_over_100x_the_residual_norm_in_its_json(
    capsys: pytest.CaptureFixture[str], direction: Path
) -> None:
    argv = ["steer", "--vector", str(direction), "--coeff", "1e6", "--prompt", "I love"]
    assert main([*argv, "--n", "1", "--max-new-tokens", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert any("125000x the median residual norm" in n for n in result["notes"])


@pytest.mark.parametrize("blob", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 80, b"not a model"])
def test_a_damaged_gguf_model_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, blob: bytes
) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(blob)
    argv = ["vector", "from-prompts", "--model", str(model), "--layer", "1"]
    argv += ["--pos", "Love", "--neg", "Hate", "--out", str(tmp_path / "v.safetensors")]
    assert "GGUF" in _error(capsys, argv)
