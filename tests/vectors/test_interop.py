"""Vectors in and out: llama.cpp control vectors (GGUF) and the peers' in-memory objects.

The layer mapping is the point of every test here: llama.cpp's ``direction.N``, repeng's and
steering-vectors' layer N are the output of block N = our ``resid_post N`` = our
``resid_pre N+1``. Each import is checked by steering with it and with the original vector at
the original site: the logits must agree.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.plan import SteeringPlan
from workbench.vectors.build import from_prompts
from workbench.vectors.llamacpp import (
    export_control_vector,
    import_control_vector,
    llamacpp_layer,
    read_control_vector,
)
from workbench.vectors.peers import from_repeng, from_steering_vectors
from workbench.vectors.vector import SteeringVector

TEXT = ["Hello world, the fox jumps"]


def _vec(model: Model, layer: int, site: str = "resid_pre", seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(model.d_model, generator=g)  # (d_model,)
    return SteeringVector({layer: d}, model.name, model.d_model, site=site, method="custom")


def _logits(model: Model, vector: SteeringVector, coeff: float = 3.0) -> torch.Tensor:
    return steered_logits(model, TEXT, SteeringPlan.of(vector, coeff))[0]


def test_layer_mapping_and_what_llamacpp_cannot_steer() -> None:
    assert llamacpp_layer("resid_pre", 6) == 5 and llamacpp_layer("resid_post", 5) == 5
    assert llamacpp_layer("resid_pre", 2) == 1
    with pytest.raises(WorkbenchError, match="output of block 0"):
        llamacpp_layer("resid_pre", 1)
    with pytest.raises(WorkbenchError, match="embeddings"):
        llamacpp_layer("resid_pre", 0)
    with pytest.raises(WorkbenchError, match="output of block 0"):
        llamacpp_layer("resid_post", 0)
    with pytest.raises(WorkbenchError, match="block outputs only"):
        llamacpp_layer("mlp_out", 3)


def test_export_import_round_trip_steers_the_same(tiny_model: Model, tmp_path: Path) -> None:
    vec = _vec(tiny_model, 2)  # our resid_pre 2 = the output of block 1 = llama.cpp direction.1
    path = export_control_vector(vec, tmp_path / "v.gguf")
    directions, meta = read_control_vector(path)
    assert list(directions) == [1] and meta["model_hint"] == "llama"
    np.testing.assert_array_equal(directions[1], vec.directions[2].numpy())
    back = import_control_vector(path, tiny_model)
    assert back.site == "resid_post" and back.layers == [1] and back.method == "llamacpp"
    torch.testing.assert_close(_logits(tiny_model, back), _logits(tiny_model, vec))
    assert (
        _logits(tiny_model, back) - steered_logits(tiny_model, TEXT, None)[0]
    ).abs().max() > 1e-2


def test_coefficients_fold_in_raw_or_norm_units(tiny_model: Model, tmp_path: Path) -> None:
    vec = _vec(tiny_model, 3, site="resid_post")
    vec = SteeringVector(
        vec.directions, vec.model, vec.d_model, site="resid_post", layer_norms={3: 10.0}
    )
    raw, _ = read_control_vector(export_control_vector(vec, tmp_path / "a.gguf", coeff=2.5))
    np.testing.assert_allclose(raw[3], 2.5 * vec.directions[3].numpy(), rtol=1e-6)
    normed, _ = read_control_vector(
        export_control_vector(vec, tmp_path / "b.gguf", coeff=0.5, units="norm")
    )
    assert np.linalg.norm(normed[3]) == pytest.approx(5.0, rel=1e-5)  # 0.5 x the norm 10


def test_prompt_pair_vectors_need_a_row(tiny_model: Model, tmp_path: Path) -> None:
    vec = from_prompts(tiny_model, "Love", "Hate", [2])  # (pos, d_model), row 0 (BOS) zero
    with pytest.raises(WorkbenchError, match="choose --row mean, last or an index"):
        export_control_vector(vec, tmp_path / "v.gguf")
    rows = vec.directions[2]
    last, _ = read_control_vector(export_control_vector(vec, tmp_path / "l.gguf", row="last"))
    np.testing.assert_array_equal(last[1], rows[-1].numpy())
    mean, _ = read_control_vector(export_control_vector(vec, tmp_path / "m.gguf", row="mean"))
    np.testing.assert_allclose(mean[1], rows[rows.norm(dim=-1) > 0].mean(0).numpy(), rtol=1e-6)


def test_imports_refuse_other_files_widths_and_layers(
    tiny_model: Model, tiny_gpt2: Model, tmp_path: Path
) -> None:
    import gguf

    other = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(other), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WorkbenchError, match="not a llama.cpp control vector"):
        import_control_vector(other, tiny_model)
    wide = SteeringVector({2: torch.ones(128)}, "big", 128, site="resid_post")
    with pytest.raises(WorkbenchError, match="width 128"):
        import_control_vector(export_control_vector(wide, tmp_path / "w.gguf"), tiny_model)
    deep = SteeringVector({9: torch.ones(64)}, "deep", 64, site="resid_post")
    with pytest.raises(WorkbenchError, match=r"layers \[9\], which"):
        import_control_vector(export_control_vector(deep, tmp_path / "d.gguf"), tiny_gpt2)


def test_cli_export_and_import(
    tiny_model: Model, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _vec(tiny_model, 2).save(tmp_path / "v.safetensors")
    out = tmp_path / "v.gguf"
    assert main(["vector", "export", str(src), str(out), "--coeff", "2"]) == 0
    assert "resid_pre 2 -> llama.cpp direction.1" in capsys.readouterr().out
    assert main(["vector", "export", str(src), str(out)]) == 2  # exists: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["vector", "export", str(src), str(out), "--overwrite"]) == 0
    back = tmp_path / "back.safetensors"
    argv = ["vector", "import", str(out), "--model", str(tiny_model_dir), "--out", str(back)]
    assert main(argv) == 0
    assert SteeringVector.load(back).site == "resid_post"
    capsys.readouterr()
    argv = ["vector", "import", str(src), "--model", str(tiny_model_dir)]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "not a readable GGUF" in capsys.readouterr().err


# --------------------------------------------------------------------------- peers


def _repeng_vector(model_type: str, directions: dict[int, np.ndarray]) -> object:
    """repeng's own ControlVector when installed (it needs a NumPy-2 shim), else its shape."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 predates NumPy 2
    try:
        from repeng import ControlVector
    except ImportError:
        return SimpleNamespace(model_type=model_type, directions=directions)
    return ControlVector(model_type=model_type, directions=directions)


def _sv_vector(layer_activations: dict[int, torch.Tensor], layer_type: str) -> object:
    try:
        from steering_vectors import SteeringVector as PeerVector
    except ImportError:
        return SimpleNamespace(layer_activations=layer_activations, layer_type=layer_type)
    return PeerVector(layer_activations=layer_activations, layer_type=layer_type)


def test_peer_vectors_land_where_the_peers_add_them(tiny_model: Model) -> None:
    """Their layer 1 (output of block 1) steers exactly as our resid_pre 2."""
    ours = _vec(tiny_model, 2)
    d = ours.directions[2]
    rep = from_repeng(_repeng_vector("llama", {1: d.numpy()}), tiny_model)
    sv = from_steering_vectors(_sv_vector({1: d}, "decoder_block"), tiny_model)
    for vec in (rep, sv):
        assert vec.site == "resid_post" and vec.layers == [1]
        torch.testing.assert_close(_logits(tiny_model, vec), _logits(tiny_model, ours))
    mlp = from_steering_vectors(_sv_vector({1: d}, "mlp"), tiny_model)
    assert mlp.site == "mlp_out"


def test_peer_vectors_for_another_model_are_refused(tiny_model: Model) -> None:
    with pytest.raises(WorkbenchError, match="width 32"):
        from_repeng(_repeng_vector("llama", {1: np.ones(32, dtype=np.float32)}), tiny_model)
    with pytest.raises(WorkbenchError, match="'gpt2' model"):
        from_repeng(_repeng_vector("gpt2", {1: np.ones(64, dtype=np.float32)}), tiny_model)
    with pytest.raises(WorkbenchError, match="layer 7, which"):
        from_steering_vectors(_sv_vector({7: torch.ones(64)}, "decoder_block"), tiny_model)
    with pytest.raises(WorkbenchError, match="no counterpart"):
        from_steering_vectors(_sv_vector({1: torch.ones(64)}, "input_layernorm"), tiny_model)
