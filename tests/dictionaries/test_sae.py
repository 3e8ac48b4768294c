"""SAEs through SAELens: training recovers planted atoms; SAELens folders move both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dictionaries
from dictionaries import DictionaryInfo, PretrainedSAE, SparseAutoencoder, reconstruction_quality
from workbench.errors import WorkbenchError


def best_match_cosines(planted: np.ndarray, found: np.ndarray) -> np.ndarray:
    """For each planted unit direction ``(m, d)``, the largest |cos| with a found row ``(k, d)``."""
    found = found / np.linalg.norm(found, axis=1, keepdims=True)
    return np.abs(planted @ found.T).max(axis=1)  # (m,)


def sparse_planted(
    n: int = 3000, d: int = 32, m: int = 48, active: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows = non-negative sparse codes (``active`` of ``m`` on) times random unit atoms.

    (Same generator as in test_dictionaries_recovery.py, kept here so each file stands alone.)
    """
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(m, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)  # (m, d)
    codes = np.zeros((n, m))
    on = np.argsort(rng.random((n, m)), axis=1)[:, :active]  # (n, active) distinct atoms
    np.put_along_axis(codes, on, rng.uniform(0.5, 2.0, size=(n, active)), axis=1)
    return (codes @ atoms).astype(np.float32), atoms


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These SAEs are tiny: on a shared 2-core machine torch's second intra-op thread only
    spin-waits for a busy core, making training 10-20x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    return sparse_planted(n=3000, d=32, m=48, active=3, seed=0)


@pytest.fixture(scope="module")
def topk(planted: tuple[np.ndarray, np.ndarray]) -> SparseAutoencoder:
    X, _ = planted
    sae = SparseAutoencoder(
        n_components=48, architecture="topk", k=3, lr=1e-2, n_steps=1000, batch_size=128
    )
    info = DictionaryInfo(model="tiny-model", site="resid_post", layer=2)
    info.hook_point = "blocks.2.hook_resid_post"
    return sae.fit(X, info=info)


def test_standard_sae_recovers_planted_atoms(planted: tuple[np.ndarray, np.ndarray]) -> None:
    X, atoms = planted
    sae = SparseAutoencoder(n_components=48, lr=3e-3, n_steps=2000, batch_size=128).fit(X)
    assert best_match_cosines(atoms, sae.components_).mean() > 0.9
    # decoder norms are folded: components_ are the decoder rows themselves
    np.testing.assert_allclose(sae.sae_.W_dec.detach().numpy(), sae.components_, atol=1e-6)
    assert sae.fit_stats_["n_steps"] == 2000 and "l1_loss" in sae.fit_stats_["final_losses"]
    assert reconstruction_quality(sae, X)["fve"] > 0.8


def test_topk_sae_recovers_planted_atoms(
    topk: SparseAutoencoder, planted: tuple[np.ndarray, np.ndarray]
) -> None:
    X, atoms = planted
    assert best_match_cosines(atoms, topk.components_).mean() > 0.9
    q = reconstruction_quality(topk, X)
    assert q["l0"] <= 3.0 and q["fve"] > 0.9


def test_training_is_reproducible_and_leaves_global_rng_alone(
    planted: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = planted
    params: dict[str, Any] = {
        "n_components": 16,
        "architecture": "topk",
        "k": 2,
        "n_steps": 30,
        "batch_size": 64,
    }
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = SparseAutoencoder(**params, random_state=7).fit(X)
    assert torch.rand(1) == before
    b = SparseAutoencoder(**params, random_state=7).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)


def test_fit_stream_trains_from_batches(planted: tuple[np.ndarray, np.ndarray]) -> None:
    X, atoms = planted
    chunks = np.array_split(X, 7)  # uneven chunks, re-cut into batches of 128
    params: dict[str, Any] = {
        "n_components": 48,
        "architecture": "topk",
        "k": 3,
        "lr": 1e-2,
        "batch_size": 128,
    }
    again = SparseAutoencoder(**params, n_steps=1000).fit_stream(chunks)  # a list: many passes
    assert again.fit_stats_["n_steps"] == 1000 and again.fit_stats_["n_rows"] == 3000
    assert best_match_cosines(atoms, again.components_).mean() > 0.9
    once = SparseAutoencoder(**params, n_steps=1000).fit_stream(c for c in chunks)  # one pass
    assert once.fit_stats_["n_steps"] == 3000 // 128


def test_architecture_options_are_checked(planted: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = planted
    with pytest.raises(WorkbenchError, match="needs k"):
        SparseAutoencoder(architecture="topk").fit(X)
    with pytest.raises(WorkbenchError, match="k applies to architecture='topk' only"):
        SparseAutoencoder(k=4).fit(X)
    with pytest.raises(WorkbenchError, match="l1_coefficient applies to architecture='standard'"):
        SparseAutoencoder(architecture="topk", k=4, l1_coefficient=2.0).fit(X)
    with pytest.raises(WorkbenchError, match="unknown: choose"):
        SparseAutoencoder(architecture="gated").fit(X)


def test_export_to_sae_lens_and_back(topk: SparseAutoencoder, tmp_path: Path) -> None:
    from sae_lens import SAE

    topk.export_sae_lens(tmp_path / "native")
    native = SAE.load_from_disk(tmp_path / "native")
    assert native.cfg.metadata.model_name == "tiny-model"
    X = sparse_planted(n=50, seed=5)[0]
    with torch.no_grad():
        theirs = native.encode(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(theirs, topk.encode(X))

    back = PretrainedSAE.from_folder(tmp_path / "native")
    np.testing.assert_array_equal(back.encode(X), topk.encode(X))
    assert back.info_.layer == 2 and back.info_.site == "resid_post"


def test_pretrained_sae_from_a_local_sae_lens_folder(tmp_path: Path) -> None:
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(0)
    cfg = JumpReLUSAEConfig(d_in=16, d_sae=40)
    cfg.metadata.model_name = "gpt2"
    cfg.metadata.hook_name = "blocks.5.hook_resid_pre"
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.threshold.fill_(0.05)
        sae.b_enc.uniform_(-0.1, 0.1)
    sae.save_model(tmp_path / "jumprelu")

    pre = PretrainedSAE.from_folder(tmp_path / "jumprelu")
    assert pre.folder == str(tmp_path / "jumprelu") and pre.is_fitted()
    assert pre.info_ == DictionaryInfo("gpt2", "resid_pre", 5, 16, "blocks.5.hook_resid_pre")
    X = np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32)
    with torch.no_grad():
        expected = sae.encode(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(pre.encode(X), expected)
    assert pre.components_.shape == (40, 16)

    weights = pre.components_.copy()
    assert pre.fit(X) is pre  # learns nothing
    np.testing.assert_array_equal(pre.components_, weights)
    assert pre.fit_stats_["n_rows"] == 20
    pre.check_compatible(16, model="gpt2", site="resid_pre", layer=5)
    with pytest.raises(WorkbenchError, match="d_model=16.*d_model=32"):
        pre.check_compatible(32)

    pre.save(tmp_path / "ours")
    again = dictionaries.load(tmp_path / "ours")
    assert isinstance(again, PretrainedSAE)
    np.testing.assert_array_equal(again.encode(X), expected)


def test_pretrained_sae_errors_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sae_lens

    with pytest.raises(WorkbenchError, match="not found"):
        PretrainedSAE.from_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="not a loadable SAELens SAE folder"):
        PretrainedSAE.from_folder(tmp_path / "empty")
    with pytest.raises(WorkbenchError, match="holds no SAE"):
        PretrainedSAE().fit(np.zeros((3, 4)))
    with pytest.raises(WorkbenchError, match="unknown SAE release 'no-such-release'"):
        PretrainedSAE.from_release("no-such-release", "x")
    with pytest.raises(WorkbenchError, match="not in release 'gpt2-small-res-jb'"):
        PretrainedSAE.from_release("gpt2-small-res-jb", "blocks.99.hook_resid_pre")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", offline)  # never touch the network
    with pytest.raises(WorkbenchError, match="hub is unreachable.*from_folder"):
        PretrainedSAE.from_release("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
