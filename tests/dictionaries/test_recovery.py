"""PCA, ICA and dictionary learning find directions planted in synthetic activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dictionaries import ICA, PCA, DictionaryInfo, DictLearn
from workbench.errors import WorkbenchError


def best_match_cosines(planted: np.ndarray, found: np.ndarray) -> np.ndarray:
    """For each planted unit direction ``(m, d)``, the largest |cos| with a found row ``(k, d)``."""
    found = found / np.linalg.norm(found, axis=1, keepdims=True)
    return np.abs(planted @ found.T).max(axis=1)  # (m,)


def orthonormal(rng: np.random.Generator, d: int, m: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, m)))  # (d, m)
    return q.T  # (m, d)


def sparse_planted(
    n: int = 3000, d: int = 32, m: int = 48, active: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows = non-negative sparse codes (``active`` of ``m`` on) times random unit atoms."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(m, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)  # (m, d)
    codes = np.zeros((n, m))
    on = np.argsort(rng.random((n, m)), axis=1)[:, :active]  # (n, active) distinct atoms
    np.put_along_axis(codes, on, rng.uniform(0.5, 2.0, size=(n, active)), axis=1)
    return (codes @ atoms).astype(np.float32), atoms


def test_pca_recovers_planted_high_variance_directions() -> None:
    rng = np.random.default_rng(0)
    d, n = 32, 2000
    planted = orthonormal(rng, d, 3)  # (3, d)
    scales = np.array([10.0, 7.0, 5.0])
    X = (rng.normal(size=(n, 3)) * scales) @ planted + rng.normal(size=(n, d)) + 4.0  # (n, d)
    pca = PCA(n_components=3).fit(X)
    cos = np.abs(np.sum(pca.components_ * planted, axis=1))  # in variance order
    assert cos.min() > 0.99, cos
    assert np.all(np.diff(pca.explained_variance_) < 0)
    np.testing.assert_allclose(pca.explained_variance_, scales**2 + 1, rtol=0.1)
    assert 0.8 < pca.explained_variance_ratio_.sum() < 1.0
    np.testing.assert_allclose(pca.mean_, 4.0, atol=0.5)


def test_ica_recovers_planted_mixing_directions() -> None:
    rng = np.random.default_rng(1)
    d, n, m = 16, 4000, 4
    mixing = rng.normal(size=(m, d))  # (m, d)
    planted = mixing / np.linalg.norm(mixing, axis=1, keepdims=True)
    sources = rng.laplace(size=(n, m))  # (n, m) independent, heavy-tailed
    X = sources @ mixing + 0.01 * rng.normal(size=(n, d)) - 2.0  # (n, d)
    ica = ICA(n_components=m, random_state=0).fit(X)
    cos = np.abs(planted @ ica.components_.T)  # (m, m)
    assert cos.max(axis=1).min() > 0.95, cos
    assert len(set(cos.argmax(axis=1))) == m  # each planted direction has its own component
    # codes are the unit-variance sources: reconstruction is near-perfect
    err = np.abs(ica.reconstruct(X) - X).max()
    assert err < 0.1


def test_streaming_pca_equals_exact_pca() -> None:
    rng = np.random.default_rng(2)
    d, n = 24, 3000
    X = rng.normal(size=(n, d)) @ np.diag(np.linspace(5.0, 0.5, d)) @ orthonormal(rng, d, d)
    X = X + 50.0  # an offset much larger than the spread, so mean merging matters
    exact = PCA(n_components=6).fit(X)
    cuts = [0, 1, 250, 777, 1500, 2999, n]  # uneven batches, one of a single row
    batches = (torch.from_numpy(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    stream = PCA(n_components=6).fit_stream(batches)
    for a, b in zip(exact.components_, stream.components_, strict=True):
        assert min(np.abs(a - b).max(), np.abs(a + b).max()) < 1e-4
    np.testing.assert_allclose(stream.explained_variance_, exact.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(
        stream.explained_variance_ratio_, exact.explained_variance_ratio_, rtol=1e-4
    )
    np.testing.assert_allclose(stream.mean_, exact.mean_, rtol=1e-6)
    assert stream.fit_stats_["n_rows"] == n and stream.fit_stats_["solver"] == "streaming"


def test_streaming_pca_partial_fit_drops_nonfinite_and_keeps_info() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 8))
    bad = X[:100].copy()
    bad[5, 3] = np.nan
    pca = PCA(n_components=2)
    pca.partial_fit(bad, info=DictionaryInfo(model="m", layer=1))
    pca.partial_fit(np.full((4, 8), np.inf))  # an all-bad batch is skipped, not fatal
    pca.partial_fit(X[100:])
    with pytest.warns(UserWarning, match="dropped 5 rows"):
        pca.finalize()
    assert pca.fit_stats_["dropped_nonfinite_rows"] == 5
    assert pca.fit_stats_["n_rows"] == 499
    assert pca.info_.model == "m" and pca.info_.d_model == 8
    with pytest.raises(WorkbenchError, match="12 columns.*d_model=8"):
        pca.partial_fit(np.zeros((3, 12)))
    with pytest.raises(WorkbenchError, match="call partial_fit before finalize"):
        PCA(n_components=2).finalize()


def test_dictlearn_recovers_planted_sparse_atoms() -> None:
    X, atoms = sparse_planted()
    dl = DictLearn(n_components=48, alpha=0.4, max_iter=6, batch_size=256, random_state=0).fit(X)
    assert best_match_cosines(atoms, dl.components_).mean() > 0.9
    codes = dl.encode(X[:200])
    assert codes.min() >= 0  # positive_code by default
    assert (np.abs(codes) > 1e-8).sum(axis=1).mean() < 8  # sparse: ~3 planted per row
