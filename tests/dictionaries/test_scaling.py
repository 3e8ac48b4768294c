"""Input scaling: a direction found in the scaled space maps back to the model's own space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dictionaries
from dictionaries import PCA, InputScaler
from dictionaries.scaling import SCALES
from workbench.errors import WorkbenchError


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise with per-dimension scales over three decades, plus a planted direction ``u``."""
    rng = np.random.default_rng(seed)
    d, n = 32, 4000
    scales = np.logspace(-1, 2, d)  # (d,) 0.1 .. 100
    u = rng.normal(size=d) * scales  # a direction living mostly where the variance is
    u /= np.linalg.norm(u)
    a = rng.normal(size=(n, 1)) * 60.0  # (n, 1) feature amplitude
    X = rng.normal(size=(n, d)) * scales + a * u  # (n, d)
    return X.astype(np.float32), u, scales


def test_decoder_direction_recovers_planted_direction_under_standardize() -> None:
    X, u, scales = _planted()
    pca = PCA(n_components=4).fit(X, scaler=InputScaler("standardize"))
    top = pca.directions_[0]
    assert _cos(top, u) > 0.95
    # The scaled-space component is another direction: using it as a steering vector is wrong.
    assert _cos(pca.components_[0], u) < 0.9
    # Reading direction = decoder / std^2 up to scale (standardize is diagonal).
    scaler = pca.scaler_
    assert scaler is not None and scaler.scale_ is not None
    expected_read = pca.directions_[0] / scaler.scale_**2
    assert _cos(pca.reading_directions_[0], expected_read) > 0.999


@pytest.mark.parametrize("scale", SCALES)
def test_full_rank_reconstruction_and_round_trip(scale: str, tmp_path: Path) -> None:
    X, _, _ = _planted(1)
    pca = PCA(n_components=32).fit(X, scaler=InputScaler(scale))
    np.testing.assert_allclose(pca.reconstruct(X), X, rtol=1e-3, atol=1e-2 * float(np.abs(X).max()))
    pca.save(tmp_path / "p")
    back = dictionaries.load(tmp_path / "p")
    np.testing.assert_array_equal(back.encode(X[:50]), pca.encode(X[:50]))
    np.testing.assert_array_equal(back.directions_, pca.directions_)
    assert (back.scaler_ is None) == (pca.scaler_ is None)


def test_none_scale_leaves_directions_equal_to_components() -> None:
    X, _, _ = _planted(2)
    pca = PCA(n_components=3).fit(X, scaler=InputScaler("none"))
    np.testing.assert_allclose(pca.directions_, pca.components_, atol=1e-6)
    plain = PCA(n_components=3).fit(X)
    np.testing.assert_allclose(np.abs(plain.components_), np.abs(pca.components_), atol=1e-4)


def test_streaming_pca_with_scaler_matches_exact() -> None:
    X, _, _ = _planted(3)
    scaler = InputScaler("standardize")
    for chunk in np.array_split(X, 7):
        scaler.partial_fit(chunk)
    scaler.finalize()
    stream = PCA(n_components=4).fit_stream(np.array_split(X, 7), scaler=scaler)
    exact = PCA(n_components=4).fit(X, scaler=InputScaler("standardize"))
    np.testing.assert_allclose(stream.directions_, exact.directions_, atol=1e-3)


def test_whiten_maps_back_through_the_axes() -> None:
    rng = np.random.default_rng(4)
    d, n = 16, 6000
    scales = np.logspace(-1, 1.5, d)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    fires = rng.random((n, 1)) < 0.1  # a sparse, non-Gaussian source ICA can find
    X = rng.normal(size=(n, d)) * scales + fires * rng.exponential(20.0, size=(n, 1)) * u
    ica = dictionaries.create("ica", n_components=d, random_state=0)
    ica.fit(X.astype(np.float32), scaler=InputScaler("whiten"))
    assert max(_cos(row, u) for row in ica.directions_) > 0.95
    np.testing.assert_allclose(np.linalg.norm(ica.directions_, axis=1), 1.0, atol=1e-5)


def test_bad_scaler_settings_are_one_line_errors() -> None:
    with pytest.raises(WorkbenchError, match="unknown scale"):
        InputScaler("zscore")
    with pytest.raises(WorkbenchError, match="not fitted"):
        InputScaler().transform(np.zeros((2, 3)))
    with pytest.raises(WorkbenchError, match="fitted scaler"):
        PCA(n_components=2).fit_stream([np.zeros((4, 3))], scaler=InputScaler())
