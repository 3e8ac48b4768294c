"""Linear decompositions: PCA (exact and streaming) and ICA.

Both centre the activations on ``mean_`` and encode with one matrix product, so codes are dense
(L0 = k). PCA axes are sign-fixed (largest-magnitude entry positive) so that exact and streaming
fits, and repeated fits, agree; ICA directions are ordered by how much variance they carry and
signed so that each source is positively skewed (it "fires" in the + direction).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import FastICA

from dictionaries import progress
from dictionaries.base import (
    ArrayLike,
    Dictionary,
    DictionaryInfo,
    as_matrix,
    to_tensor,
)
from dictionaries.registry import register
from dictionaries.scaling import InputScaler, Moments, unit_rows
from workbench.errors import check


def _check_k_fits(k: int, d_model: int | None, method: str) -> None:
    if d_model is None:
        return
    check(
        k <= d_model,
        f"{method} n_components={k} is out of range for d_model={d_model}: choose 1..{d_model}",
    )


@register("pca")
class PCA(Dictionary):
    """Principal component analysis: ``components_`` are the top-``n_components`` axes.

    Exact: :meth:`fit` runs an SVD of the centred data in float64. Streaming: call
    :meth:`partial_fit` on batches and then :meth:`finalize`, or :meth:`fit_stream` on an
    iterable of batches; memory stays at one ``d_model x d_model`` float64 matrix.
    With ``whiten=True`` codes are divided by the axis standard deviation (unit variance).

    >>> pca = PCA(n_components=2).fit(np.random.default_rng(0).normal(size=(100, 8)))
    >>> pca.encode(np.zeros((3, 8))).shape
    (3, 2)
    """

    mean_: np.ndarray  # (d_model,) float32
    explained_variance_: np.ndarray  # (k,) float64
    explained_variance_ratio_: np.ndarray  # (k,) float64
    _moments: Moments | None  # running statistics of a streaming fit

    def __init__(self, n_components: int = 16, whiten: bool = False) -> None:
        self.n_components = n_components
        self.whiten = whiten

    def _validate_params(self, d_model: int | None) -> None:
        super()._validate_params(d_model)
        _check_k_fits(self.n_components, d_model, "pca")

    def check_rows(self, n_rows: int) -> None:
        # n centred rows span at most n - 1 axes: the axes past them would be arbitrary.
        check(
            self.n_components <= n_rows - 1,
            f"pca n_components={self.n_components} needs at least {self.n_components + 1} rows "
            f"but got {n_rows}, which span only {max(n_rows - 1, 0)} axes: lower --k to at most "
            f"{max(n_rows - 1, 1)} or give more data",
        )

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        n = X.shape[0]
        X64 = X.astype(np.float64)
        mean = X64.mean(axis=0)  # (d,)
        _, S, Vt = np.linalg.svd(X64 - mean, full_matrices=False)  # S (r,), Vt (r, d)
        self._set_axes(mean, S**2 / (n - 1), Vt)
        self._moments = None
        return {"solver": "exact"}

    # -- streaming ------------------------------------------------------------------------------

    def partial_fit(self, X: ArrayLike, info: DictionaryInfo | None = None) -> PCA:
        """Accumulate one batch ``(n, d_model)`` of a streaming fit; call :meth:`finalize` after.

        Non-finite rows are dropped and counted (a batch of only non-finite rows is skipped).
        """
        X_arr = as_matrix(X, "batch")
        finite = np.isfinite(X_arr).all(axis=1)  # (n,)
        moments = getattr(self, "_moments", None)
        if moments is None:
            self._begin_fit(X_arr.shape[1], info)
            d = X_arr.shape[1]
            moments = self._moments = Moments.empty(d)
        else:
            self._check_width(X_arr.shape[1], "batch")
        moments.dropped += int((~finite).sum())
        if finite.any():
            moments.add(X_arr[finite])
        return self

    def finalize(self) -> PCA:
        """Finish a streaming fit: eigendecompose the accumulated covariance; return ``self``."""
        moments = getattr(self, "_moments", None)
        check(moments is not None, "no batches accumulated: call partial_fit before finalize")
        assert moments is not None
        self.check_rows(moments.n)
        if moments.dropped:
            warnings.warn(
                f"dropped {moments.dropped} rows holding NaN or inf from the pca stream",
                stacklevel=2,
            )
        cov = moments.scatter / (moments.n - 1)  # (d, d)
        evals, evecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(evals)[::-1]
        self._set_axes(moments.mean, np.clip(evals[order], 0.0, None), evecs[:, order].T)
        self._end_fit(moments.n, moments.dropped, moments.start, {"solver": "streaming"})
        return self

    def fit_stream(
        self,
        batches: Iterable[ArrayLike],
        info: DictionaryInfo | None = None,
        *,
        scaler: InputScaler | None = None,
    ) -> PCA:
        """Streaming fit over an iterable of ``(n_i, d_model)`` batches; return ``self``.

        ``scaler`` must be fitted already (on the same rows, e.g. by its own streaming pass):
        each batch is scaled before it is accumulated, and the scaler is kept as ``scaler_``.
        """
        check(
            scaler is None or scaler.is_fitted(),
            "fit_stream needs a fitted scaler: fit it on the rows first (partial_fit, finalize)",
        )
        self._moments = None
        with progress.task(f"pca streaming fit ({self.n_components} components)", unit="rows"):
            for batch in batches:
                x = batch if scaler is None else scaler.transform(as_matrix(batch, "batch"))
                self.partial_fit(x, info)
                if self._moments is not None:
                    progress.advance(self._moments.n)
            self.finalize()
        self.scaler_ = scaler
        return self

    # -- shared ---------------------------------------------------------------------------------

    def _set_axes(self, mean: np.ndarray, variances: np.ndarray, axes: np.ndarray) -> None:
        """``variances`` (r,) descending over all axes; ``axes`` (r, d) matching rows."""
        k = self.n_components
        top = axes[:k].copy()  # (k, d)
        pivot = np.argmax(np.abs(top), axis=1)  # (k,)
        top *= np.sign(top[np.arange(k), pivot])[:, None]
        total = float(variances.sum())
        self.mean_ = mean.astype(np.float32)
        self.components_ = unit_rows(top)
        self.explained_variance_ = variances[:k].astype(np.float64)
        self.explained_variance_ratio_ = self.explained_variance_ / (total if total > 0 else 1.0)

    def _scale(self) -> np.ndarray:
        std = np.sqrt(self.explained_variance_).astype(np.float32)  # (k,)
        return np.where(std > 0, std, np.float32(1.0))

    def _encode(self, X: np.ndarray) -> np.ndarray:
        Z = (X.astype(np.float32) - self.mean_) @ self.components_.T  # (n, k)
        return Z / self._scale() if self.whiten else Z

    def _decode(self, Z: np.ndarray) -> np.ndarray:
        Z32 = Z.astype(np.float32)
        if self.whiten:
            Z32 = Z32 * self._scale()
        return Z32 @ self.components_ + self.mean_  # (n, d)

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "components": to_tensor(self.components_),
            "mean": to_tensor(self.mean_),
            "explained_variance": to_tensor(self.explained_variance_),
            "explained_variance_ratio": to_tensor(self.explained_variance_ratio_),
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.components_ = tensors["components"].numpy()
        self.mean_ = tensors["mean"].numpy()
        self.explained_variance_ = tensors["explained_variance"].numpy()
        self.explained_variance_ratio_ = tensors["explained_variance_ratio"].numpy()


@register("ica")
class ICA(Dictionary):
    """Independent component analysis with scikit-learn's FastICA (``whiten="unit-variance"``).

    ``components_`` are the mixing directions (columns of ``mixing_``) normalised to unit norm.
    ``encode`` is FastICA's ``transform`` (``(X - mean_) @ unmixing_.T``, unit-variance
    sources) and ``decode`` its ``inverse_transform`` (``Z @ mixing_.T + mean_``), computed from
    stored arrays so no scikit-learn object needs pickling.
    """

    mean_: np.ndarray  # (d_model,) float32
    unmixing_: np.ndarray  # (k, d_model) float32
    mixing_: np.ndarray  # (d_model, k) float32

    def __init__(
        self,
        n_components: int = 16,
        fun: str = "logcosh",
        max_iter: int = 400,
        tol: float = 1e-4,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _validate_params(self, d_model: int | None) -> None:
        super()._validate_params(d_model)
        _check_k_fits(self.n_components, d_model, "ica")
        funs = ("logcosh", "exp", "cube")
        check(self.fun in funs, f"ica fun={self.fun!r} is unknown: choose one of {funs}")
        check(self.max_iter >= 1, f"ica max_iter={self.max_iter} must be >= 1")
        check(self.tol > 0, f"ica tol={self.tol} must be positive")

    def check_rows(self, n_rows: int) -> None:
        check(
            n_rows > self.n_components,
            f"ica n_components={self.n_components} needs more rows than that, got {n_rows}: "
            f"lower --k to at most {max(n_rows - 1, 1)} or give more data",
        )

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        ica = FastICA(
            n_components=self.n_components,
            whiten="unit-variance",
            fun=self.fun,  # type: ignore[arg-type]
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        S = ica.fit_transform(X.astype(np.float64))  # (n, k)
        unmixing, mixing = ica.components_, ica.mixing_  # (k, d), (d, k)
        order = np.argsort(-np.linalg.norm(mixing, axis=0), kind="stable")
        sign = np.where((S**3).mean(axis=0) < 0, -1.0, 1.0)[order]  # (k,)
        self.mean_ = ica.mean_.astype(np.float32)
        self.unmixing_ = (unmixing[order] * sign[:, None]).astype(np.float32)
        self.mixing_ = (mixing[:, order] * sign[None, :]).astype(np.float32)
        self.components_ = unit_rows(self.mixing_.T)
        return {"n_iter": int(ica.n_iter_)}

    def _encode(self, X: np.ndarray) -> np.ndarray:
        return (X.astype(np.float32) - self.mean_) @ self.unmixing_.T  # (n, k)

    def _decode(self, Z: np.ndarray) -> np.ndarray:
        return Z.astype(np.float32) @ self.mixing_.T + self.mean_  # (n, d)

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "components": to_tensor(self.components_),
            "mean": to_tensor(self.mean_),
            "unmixing": to_tensor(self.unmixing_),
            "mixing": to_tensor(self.mixing_),
        }

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.components_ = tensors["components"].numpy()
        self.mean_ = tensors["mean"].numpy()
        self.unmixing_ = tensors["unmixing"].numpy()
        self.mixing_ = tensors["mixing"].numpy()
