"""Sparse dictionary learning with scikit-learn's ``MiniBatchDictionaryLearning``.

Activations are centred on ``mean_`` and written as sparse combinations of unit-norm atoms
(``components_``). Codes come from ``sparse_encode`` with the same lasso algorithm, ``alpha`` and
sign constraint that the fit used, so ``encode`` reproduces the codes the atoms were learned with.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
from sklearn.exceptions import ConvergenceWarning

from dictionaries import progress
from dictionaries.base import Dictionary, to_tensor
from dictionaries.registry import register
from dictionaries.scaling import unit_rows
from workbench.errors import check

_ALGORITHMS = {"cd": "lasso_cd", "lars": "lasso_lars"}


@register("dictlearn")
class DictLearn(Dictionary):
    """Mini-batch dictionary learning: ``x - mean_ ≈ codes @ components_`` with sparse codes.

    ``alpha`` is the L1 penalty (larger: sparser codes); it is in the units of the activations,
    so scale it with their norm. ``positive_code=True`` (the default) keeps codes non-negative,
    so each atom is a direction that a feature adds, as in an SAE; it needs
    ``fit_algorithm="cd"``. ``max_iter`` full passes over the data always run (no early
    stopping), which keeps fits reproducible for a given ``random_state``.
    """

    mean_: np.ndarray  # (d_model,) float32

    def __init__(
        self,
        n_components: int = 64,
        alpha: float = 1.0,
        fit_algorithm: str = "cd",
        positive_code: bool = True,
        batch_size: int = 256,
        max_iter: int = 10,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.fit_algorithm = fit_algorithm
        self.positive_code = positive_code
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state

    def _validate_params(self, d_model: int | None) -> None:
        super()._validate_params(d_model)
        check(
            self.fit_algorithm in _ALGORITHMS,
            f"dictlearn fit_algorithm={self.fit_algorithm!r} is unknown: choose one of "
            f"{sorted(_ALGORITHMS)}",
        )
        check(
            not (self.positive_code and self.fit_algorithm == "lars"),
            "dictlearn positive_code=True needs fit_algorithm='cd' (lars cannot constrain signs)",
        )
        check(self.alpha > 0, f"dictlearn alpha={self.alpha} must be positive")
        check(self.batch_size >= 1, f"dictlearn batch_size={self.batch_size} must be >= 1")
        check(self.max_iter >= 1, f"dictlearn max_iter={self.max_iter} must be >= 1")

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        X64 = X.astype(np.float64)
        mean = X64.mean(axis=0)  # (d,)
        model = MiniBatchDictionaryLearning(
            n_components=self.n_components,
            alpha=self.alpha,
            fit_algorithm=self.fit_algorithm,  # type: ignore[arg-type]
            positive_code=self.positive_code,
            batch_size=min(self.batch_size, X.shape[0]),
            max_iter=self.max_iter,
            tol=0.0,
            max_no_improvement=None,
            random_state=self.random_state,
            callback=lambda env: progress.advance(env["i"] + 1, env.get("n_steps")),
        )
        with _quiet_lasso():
            model.fit(X64 - mean)
        self.mean_ = mean.astype(np.float32)
        # Atoms are constrained to the unit ball; the rare shrunken one is rescaled so that all
        # rows are unit norm, and encode uses these same atoms, so codes stay consistent.
        self.components_ = unit_rows(model.components_)
        return {"n_steps": int(model.n_steps_)}

    def _encode(self, X: np.ndarray) -> np.ndarray:
        Xc = X.astype(np.float64) - self.mean_  # (n, d)
        with _quiet_lasso():
            codes = sparse_encode(
                Xc,
                self.components_.astype(np.float64),
                algorithm=_ALGORITHMS[self.fit_algorithm],  # type: ignore[arg-type]
                alpha=self.alpha,
                positive=self.positive_code,
            )
        return codes  # (n, k)

    def _decode(self, Z: np.ndarray) -> np.ndarray:
        return Z.astype(np.float32) @ self.components_ + self.mean_  # (n, d)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"components": to_tensor(self.components_), "mean": to_tensor(self.mean_)}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.components_ = tensors["components"].numpy()
        self.mean_ = tensors["mean"].numpy()


class _quiet_lasso(warnings.catch_warnings):
    """Silence the coordinate-descent ConvergenceWarning that fires once per batch with duality
    gaps around 1e-7: thousands of identical lines would bury every useful warning."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)
