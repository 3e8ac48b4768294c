"""Reconstruction quality numbers: variance explained, MSE, L0, dead atoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dictionaries import PCA, PretrainedSAE, reconstruction_quality
from workbench.errors import WorkbenchError


def anisotropic(n: int = 1000, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(4.0, 0.5, d) + 2.0  # (n, d)


def test_full_rank_pca_reconstructs_exactly() -> None:
    X = anisotropic()
    q = reconstruction_quality(PCA(n_components=12).fit(X), X)
    assert q["fve"] == pytest.approx(1.0, abs=1e-5)
    assert q["mse"] < 1e-9
    assert q["l0"] == pytest.approx(12.0)  # dense codes
    assert q["dead_atoms"] == 0 and q["dead_atom_indices"] == []
    json.dumps(q)  # JSON-ready, so model-based measures can be merged in and saved


def test_fve_of_truncated_pca_is_its_explained_variance_ratio() -> None:
    X = anisotropic()
    pca = PCA(n_components=4).fit(X)
    q = reconstruction_quality(pca, X, batch_size=97)  # batching changes nothing
    assert q["fve"] == pytest.approx(pca.explained_variance_ratio_.sum(), abs=1e-5)
    dropped_variance = np.var(X, axis=0, ddof=0).sum() * (1 - q["fve"])
    assert q["mse"] == pytest.approx(dropped_variance / X.shape[1], rel=1e-4)
    whole = reconstruction_quality(pca, X, batch_size=4096)
    assert whole["fve"] == pytest.approx(q["fve"], abs=1e-9) and whole["l0"] == q["l0"] == 4.0


def test_dead_atoms_are_the_latents_that_never_fire(tmp_path: Path) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=12, d_sae=20))
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_enc[[3, 7, 11]] = -1e4  # these can never be active
    sae.save_model(tmp_path / "sae")
    q = reconstruction_quality(PretrainedSAE.from_folder(tmp_path / "sae"), anisotropic())
    assert q["dead_atoms"] == 3 and q["dead_atom_indices"] == [3, 7, 11]
    assert q["dead_atom_fraction"] == pytest.approx(3 / 20)
    assert 0 < q["l0"] < 17


def test_nonfinite_rows_and_wrong_width() -> None:
    X = anisotropic()
    pca = PCA(n_components=3).fit(X)
    X[4, 0] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 of 1000"):
        q = reconstruction_quality(pca, X)
    assert q["n_rows"] == 999 and q["dropped_nonfinite_rows"] == 1
    with pytest.raises(WorkbenchError, match="d_model=12.*d_model=5"):
        reconstruction_quality(pca, np.zeros((3, 5)))
