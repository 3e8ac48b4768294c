"""Input scaling before a fit, and how a direction found in the scaled space maps back.

Residual-stream dimensions differ in scale by orders of magnitude (a few "massive" dimensions
carry most of the variance), so a decomposition of raw activations mostly finds those. Fitting
in a scaled space ``z = (x - mean_) @ T`` fixes that, but then a component ``c`` (a row of
``components_``, a direction in ``z``) is *not* a direction of the model's own space. Two
model-space directions belong to it, and they differ unless ``T`` is orthogonal:

- the **decoder (writing) direction** ``c @ T⁺``: moving ``z`` by ``c`` moves ``x`` by it. This is
  what a steering vector must add to the residual stream; :meth:`InputScaler.decoder_directions`.
  For ``standardize`` it is ``c * std`` (per dimension), for ``whiten`` ``c @ Λ^½ Uᵀ``.
- the **encoder (reading) direction** ``T @ c``: ``c · z = (x - mean_) · (T @ c)``, the direction
  a linear probe of the component reads. For ``standardize`` it is ``c / std``;
  :meth:`InputScaler.encoder_directions`.

Scales (``SCALES``): ``none`` (identity), ``center`` (subtract the mean), ``standardize``
(centre, divide each dimension by its standard deviation, floored at ``floor`` x the median
standard deviation so near-constant dimensions do not explode), ``whiten`` (centre and rotate
onto the principal axes with unit variance; eigenvalues floored the same way).

The scaler is fitted on the rows the dictionary is fitted on (streaming: :meth:`partial_fit`
then :meth:`finalize`), saved with the dictionary, and applied by
:meth:`dictionaries.base.Dictionary.encode` / ``decode`` so callers never see the scaled space.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from workbench.errors import check

SCALES = ("none", "center", "standardize", "whiten")


@dataclasses.dataclass
class Moments:
    """Running count, mean and centred scatter matrix in float64 (memory d_model², any rows)."""

    n: int
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d): sum of (x - mean)(x - mean)^T
    dropped: int = 0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    @classmethod
    def empty(cls, d: int) -> Moments:
        return cls(0, np.zeros(d), np.zeros((d, d)))

    def add(self, X: np.ndarray) -> None:
        """Merge a batch with Chan et al.'s pairwise update (no sum-of-squares cancellation)."""
        X64 = X.astype(np.float64, copy=False)
        nb = X64.shape[0]
        if nb == 0:
            return
        mean_b = X64.mean(axis=0)  # (d,)
        Xc = X64 - mean_b  # (nb, d)
        scatter_b = Xc.T @ Xc  # (d, d)
        delta = mean_b - self.mean  # (d,)
        total = self.n + nb
        self.scatter += scatter_b + np.outer(delta, delta) * (self.n * nb / total)
        self.mean += delta * (nb / total)
        self.n = total


class InputScaler:
    """``x -> z = (x - mean_) @ transform_`` (see the module docstring).

    ``transform_`` is kept implicitly: ``scale_`` ``(d,)`` for ``standardize`` (``T = diag(1 /
    scale_)``), ``axes_`` ``(d, d)`` and ``scale_`` for ``whiten`` (``T = axes_ᵀ diag(1/scale_)``,
    ``axes_`` rows the principal axes), nothing for ``none``/``center``.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3)) * np.array([1.0, 10.0, 100.0])
    >>> s = InputScaler("standardize").fit(X)
    >>> np.round(s.transform(X).std(0), 2)
    array([1., 1., 1.])
    """

    mean_: np.ndarray  # (d,) float64
    scale_: np.ndarray | None  # (d,) float64: per-dimension std, or per-axis std (whiten)
    axes_: np.ndarray | None  # (d, d) float64 rows = principal axes (whiten only)

    def __init__(self, scale: str = "standardize", floor: float = 1e-3) -> None:
        check(scale in SCALES, f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
        check(0 < floor < 1, f"scale floor {floor} must lie strictly between 0 and 1")
        self.scale = scale
        self.floor = floor
        self._moments: Moments | None = None

    # -- fitting --------------------------------------------------------------------------------

    def is_fitted(self) -> bool:
        return hasattr(self, "mean_")

    def fit(self, X: np.ndarray) -> InputScaler:
        """Fit on rows ``X`` ``(n, d)`` (finite); return ``self``."""
        self._moments = None
        return self.partial_fit(X).finalize()

    def partial_fit(self, X: np.ndarray) -> InputScaler:
        """Accumulate one batch ``(n, d)`` of finite rows; call :meth:`finalize` after the last."""
        X = np.asarray(X)
        if self._moments is None:
            self._moments = Moments.empty(X.shape[1])
        check(
            X.shape[1] == self._moments.mean.shape[0],
            f"batch has {X.shape[1]} columns, earlier batches {self._moments.mean.shape[0]}",
        )
        self._moments.add(X)
        return self

    def finalize(self) -> InputScaler:
        m = self._moments
        check(m is not None and m.n >= 2, "the scaler saw fewer than 2 rows: give more rows")
        assert m is not None
        self.mean_ = m.mean.copy()
        self.scale_, self.axes_ = None, None
        cov = m.scatter / (m.n - 1)  # (d, d)
        if self.scale == "standardize":
            self.scale_ = self._floored(np.sqrt(np.clip(np.diag(cov), 0.0, None)))
        elif self.scale == "whiten":
            evals, evecs = np.linalg.eigh(cov)  # ascending
            order = np.argsort(evals)[::-1]
            self.scale_ = self._floored(np.sqrt(np.clip(evals[order], 0.0, None)))
            self.axes_ = evecs[:, order].T.copy()  # (d, d) rows = axes
        self._moments = None
        return self

    def _floored(self, std: np.ndarray) -> np.ndarray:
        positive = std[std > 0]
        ref = float(np.median(positive)) if positive.size else 1.0
        return np.maximum(std, self.floor * ref)  # (d,)

    def _check_fitted(self) -> None:
        check(self.is_fitted(), "this InputScaler is not fitted yet: call fit first")

    # -- the maps -------------------------------------------------------------------------------

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(n, d)`` activations -> ``(n, d)`` scaled rows (float32)."""
        self._check_fitted()
        X64 = np.asarray(X, dtype=np.float64)
        if self.scale == "none":
            return X64.astype(np.float32)
        Z = X64 - self.mean_  # (n, d)
        if self.axes_ is not None:
            Z = Z @ self.axes_.T  # (n, d) coordinates on the axes
        if self.scale_ is not None:
            Z = Z / self.scale_
        return Z.astype(np.float32)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """``(n, d)`` scaled rows -> activations (float32)."""
        self._check_fitted()
        X = np.asarray(Z, dtype=np.float64)
        if self.scale == "none":
            return X.astype(np.float32)
        if self.scale_ is not None:
            X = X * self.scale_
        if self.axes_ is not None:
            X = X @ self.axes_
        return (X + self.mean_).astype(np.float32)

    def decoder_directions(self, C: np.ndarray) -> np.ndarray:
        """Model-space writing directions ``(k, d)`` of scaled-space rows ``C``, unit norm.

        Moving ``z`` along ``C[i]`` moves ``x`` along row ``i``: what a steering vector adds.
        """
        return unit_rows(self._linear_inverse(np.asarray(C, dtype=np.float64)))

    def encoder_directions(self, C: np.ndarray) -> np.ndarray:
        """Model-space reading directions ``(k, d)``: ``C[i] · z = (x - mean_) · row_i`` (up to
        scale), unit norm."""
        self._check_fitted()
        R = np.asarray(C, dtype=np.float64)
        if self.scale_ is not None:
            R = R / self.scale_
        if self.axes_ is not None:
            R = R @ self.axes_
        return unit_rows(R)

    def _linear_inverse(self, C: np.ndarray) -> np.ndarray:
        self._check_fitted()
        if self.scale_ is not None:
            C = C * self.scale_
        if self.axes_ is not None:
            C = C @ self.axes_
        return C

    # -- persistence ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "floor": self.floor}

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors under fixed names (prefix ``scaler.``), saved beside the dictionary's."""
        self._check_fitted()
        out = {"scaler.mean": torch.from_numpy(np.ascontiguousarray(self.mean_))}
        if self.scale_ is not None:
            out["scaler.scale"] = torch.from_numpy(np.ascontiguousarray(self.scale_))
        if self.axes_ is not None:
            out["scaler.axes"] = torch.from_numpy(np.ascontiguousarray(self.axes_))
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InputScaler:
        obj = cls(str(config.get("scale")), float(config.get("floor", 1e-3)))
        obj.mean_ = tensors["scaler.mean"].numpy().astype(np.float64)
        obj.scale_ = tensors["scaler.scale"].numpy() if "scaler.scale" in tensors else None
        obj.axes_ = tensors["scaler.axes"].numpy() if "scaler.axes" in tensors else None
        return obj


def unit_rows(M: np.ndarray) -> np.ndarray:
    """Rows of ``M`` scaled to unit norm, as float32 (zero rows stay zero)."""
    M64 = np.asarray(M, dtype=np.float64)
    norms = np.linalg.norm(M64, axis=1, keepdims=True)  # (k, 1)
    return (M64 / np.where(norms > 0, norms, 1.0)).astype(np.float32)
