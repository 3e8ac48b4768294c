"""The interface every decomposition backend implements.

A :class:`Dictionary` follows scikit-learn's contract: every hyperparameter is an explicit keyword
of ``__init__``, which only stores it; :meth:`Dictionary.fit` returns ``self``; learned state ends
in an underscore. Whatever the method, a fitted dictionary exposes

- ``components_``: float32 ``(k, d_model)``, one unit-norm direction in activation space per row;
- ``encode(X) -> (n, k)`` codes and ``decode(Z) -> (n, d_model)`` activations (numpy float32);
- ``d_model_``, ``info_`` (:class:`DictionaryInfo`, where the activations came from) and
  ``fit_stats_`` (rows used, non-finite rows dropped, seconds, backend extras);
- ``directions_``: ``(k, d_model)`` unit decoder (writing) directions in the model's own space,
  what a steering vector adds, and ``reading_directions_`` the encoder (reading) ones.

``fit(X, scaler=InputScaler("standardize"))`` fits in a scaled space (:mod:`dictionaries.scaling`);
then ``components_`` live in that space, ``encode``/``decode`` still take and return model-space
activations, and ``directions_`` differ from ``components_``. Without a scaler they are equal.

The dictionary cannot know which model, layer or hook its activations came from, so the caller
says so, either at fit time or before saving::

    pca = PCA(n_components=16).fit(X, info=DictionaryInfo(model="gpt2", site="resid_post", layer=6))
    pca.info_ = DictionaryInfo(model="gpt2", site="resid_post", layer=6)  # equivalent, after fit
    pca.save("runs/pca-l6")

A saved dictionary is a folder holding ``config.json`` (method, hyperparameters, d_model, info,
fit statistics, format version) and ``weights.safetensors`` (fixed tensor names per backend);
``dictionaries.load(folder)`` rebuilds it with every array equal bit for bit.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import time
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from dictionaries import progress
from dictionaries.scaling import InputScaler
from workbench.errors import WorkbenchError, check
from workbench.io import atomic_path, save_tensors

FORMAT = "workbench.dictionary"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"

ArrayLike = np.ndarray | torch.Tensor
D = TypeVar("D", bound="Dictionary")


@dataclasses.dataclass
class DictionaryInfo:
    """Where the activations a dictionary was fitted on came from.

    ``site`` is the workbench's name for the position in the block (e.g. ``"resid_post"``);
    ``hook_point`` is the full hook name when known (e.g. ``"blocks.6.hook_resid_post"``).
    ``d_model`` is filled in by :meth:`Dictionary.fit` from the data.
    """

    model: str | None = None
    site: str | None = None
    layer: int | None = None
    d_model: int | None = None
    hook_point: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DictionaryInfo:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        check(not unknown, f"unknown dictionary info keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_hook_name(cls, hook_name: str | None, model: str | None = None) -> DictionaryInfo:
        """Parse a TransformerLens hook name such as ``blocks.6.hook_resid_post``."""
        layer: int | None = None
        site: str | None = None
        if hook_name:
            m = re.fullmatch(r"blocks\.(\d+)\.(?:\w+\.)?hook_(\w+)", hook_name)
            if m:
                layer, site = int(m.group(1)), m.group(2)
        return cls(model=model, site=site, layer=layer, hook_point=hook_name)


def as_matrix(X: Any, what: str = "X") -> np.ndarray:
    """Turn a numpy array or torch tensor ``(n, d)`` of any float dtype into float32/float64."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu()
        if X.dtype not in (torch.float32, torch.float64):
            X = X.float()  # numpy has no bfloat16, and float16 maths is too coarse
        X = X.numpy()
    X = np.asarray(X)
    check(X.ndim == 2, f"{what} must be a 2-D (rows, d_model) array, got shape {X.shape}")
    check(X.shape[0] > 0, f"{what} has no rows: give at least one activation row")
    if X.dtype not in (np.float32, np.float64):
        check(
            np.issubdtype(X.dtype, np.number),
            f"{what} has dtype {X.dtype}; give a numeric (float) array",
        )
        X = X.astype(np.float32)
    return X


def drop_nonfinite(X: np.ndarray, what: str = "X") -> tuple[np.ndarray, int]:
    """Drop rows holding NaN or inf; warn with the count; refuse if nothing is left."""
    finite = np.isfinite(X).all(axis=1)  # (n,)
    dropped = int((~finite).sum())
    check(
        dropped < X.shape[0],
        f"all {X.shape[0]} rows of {what} contain NaN or inf: fix the activations before fitting",
    )
    if dropped:
        warnings.warn(
            f"dropped {dropped} of {X.shape[0]} rows of {what} holding NaN or inf",
            stacklevel=3,
        )
        X = X[finite]
    return X, dropped


class Dictionary(ABC):
    """Abstract decomposition of activations into ``k`` directions (see the module docstring).

    Subclasses implement :meth:`_fit`, :meth:`_encode`, :meth:`_decode`, :meth:`_state` and
    :meth:`_load_state`; the base class does input checks, statistics, persistence and the
    compatibility check. ``method`` is the registry name, set by ``registry.register``.
    """

    method: ClassVar[str] = ""

    components_: np.ndarray  # (k, d_model) float32, unit-norm rows
    d_model_: int
    info_: DictionaryInfo
    fit_stats_: dict[str, Any]
    scaler_: InputScaler | None = None  # the input scaling the backend was fitted under

    # -- scikit-learn style parameters ---------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"]

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__``, by name."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting --------------------------------------------------------------------------------

    def fit(
        self: D,
        X: ArrayLike,
        info: DictionaryInfo | None = None,
        *,
        scaler: InputScaler | None = None,
    ) -> D:
        """Learn the dictionary from activations ``X`` ``(n, d_model)``; return ``self``.

        Rows holding NaN or inf are dropped with a warning and counted in
        ``fit_stats_["dropped_nonfinite_rows"]``. ``info`` records where ``X`` came from.
        ``scaler`` (fitted here on ``X`` unless already fitted) puts the backend in a scaled
        space; it is kept as ``scaler_`` and saved with the dictionary.
        """
        start = time.perf_counter()
        X_arr = as_matrix(X)
        X_arr, dropped = drop_nonfinite(X_arr)
        self._begin_fit(X_arr.shape[1], info)
        self.check_rows(X_arr.shape[0])
        if scaler is not None:
            if not scaler.is_fitted():
                scaler.fit(X_arr)
            X_arr = scaler.transform(X_arr)
        k = getattr(self, "n_components", "?")
        what = f"{self.method} fit ({k} components, {len(X_arr)} rows)"
        with progress.task(what):
            extra = self._fit(X_arr)
        self.scaler_ = scaler
        self._end_fit(X_arr.shape[0], dropped, start, extra)
        return self

    def _begin_fit(self, d_model: int, info: DictionaryInfo | None) -> None:
        info = dataclasses.replace(info) if info is not None else DictionaryInfo()
        check(
            info.d_model is None or info.d_model == d_model,
            f"info says d_model={info.d_model} but the activations have {d_model} columns: "
            "fix the info or the data",
        )
        info.d_model = d_model
        self._validate_params(d_model)
        self.d_model_ = d_model
        self.info_ = info
        self.scaler_ = None

    def _end_fit(
        self, n_rows: int, dropped: int, start: float, extra: dict[str, Any] | None
    ) -> None:
        self.fit_stats_ = {
            "n_rows": int(n_rows),
            "dropped_nonfinite_rows": int(dropped),
            "seconds": round(time.perf_counter() - start, 4),
            **(extra or {}),
        }

    def _validate_params(self, d_model: int | None) -> None:
        """Check hyperparameter ranges, and against the data width when ``d_model`` is known
        (``None``: before any data, as :func:`dictionaries.create` does). Override to add checks.
        """
        k = getattr(self, "n_components", None)
        if k is not None:
            check(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1,
                f"n_components={k!r} is invalid: give a positive integer",
            )
        seed = getattr(self, "random_state", None)
        check(
            seed is None or (isinstance(seed, int) and 0 <= seed < 2**32),
            f"{self.method} random_state={seed!r} is out of range: give a seed in 0..{2**32 - 1}",
        )

    def check_rows(self, n_rows: int) -> None:
        """Refuse to fit on ``n_rows`` rows when they cannot determine the dictionary (a PCA
        with more components than the rows span); callers may ask before reading any data."""
        check(n_rows >= 1, f"{self.method} has no rows to fit on: give at least one row")

    @abstractmethod
    def _fit(self, X: np.ndarray) -> dict[str, Any] | None:
        """Fit on finite rows ``X`` ``(n, d_model)``; set the learned state; return extra stats."""

    # -- encoding and decoding ------------------------------------------------------------------

    @property
    def n_components_(self) -> int:
        self._check_fitted()
        return int(self.components_.shape[0])

    @property
    def directions_(self) -> np.ndarray:
        """``(k, d_model)`` unit decoder directions in the model's space: what moving a code
        by one adds to the activation (see :mod:`dictionaries.scaling`). Steer with these."""
        self._check_fitted()
        if self.scaler_ is None:
            return self.components_
        return self.scaler_.decoder_directions(self.components_)

    @property
    def reading_directions_(self) -> np.ndarray:
        """``(k, d_model)`` unit encoder (reading) directions in the model's space."""
        self._check_fitted()
        if self.scaler_ is None:
            return self.components_
        return self.scaler_.encoder_directions(self.components_)

    def is_fitted(self) -> bool:
        return hasattr(self, "components_") and hasattr(self, "d_model_")

    def _check_fitted(self) -> None:
        check(self.is_fitted(), f"this {type(self).__name__} is not fitted yet: call fit first")

    def encode(self, X: ArrayLike) -> np.ndarray:
        """Codes ``(n, k)`` float32 for activations ``X`` ``(n, d_model)``. Rows are not dropped."""
        self._check_fitted()
        X_arr = as_matrix(X)
        self._check_width(X_arr.shape[1], "X")
        if self.scaler_ is not None:
            X_arr = self.scaler_.transform(X_arr)
        return np.asarray(self._encode(X_arr), dtype=np.float32)

    def decode(self, Z: ArrayLike) -> np.ndarray:
        """Activations ``(n, d_model)`` float32 rebuilt from codes ``Z`` ``(n, k)``."""
        self._check_fitted()
        Z_arr = as_matrix(Z, "codes")
        k = self.components_.shape[0]
        check(
            Z_arr.shape[1] == k,
            f"codes have {Z_arr.shape[1]} columns but this dictionary has {k} components: "
            "pass the output of encode",
        )
        X = np.asarray(self._decode(Z_arr), dtype=np.float32)
        return X if self.scaler_ is None else self.scaler_.inverse_transform(X)

    def reconstruct(self, X: ArrayLike) -> np.ndarray:
        """``decode(encode(X))``: the part of ``X`` the dictionary explains, ``(n, d_model)``."""
        return self.decode(self.encode(X))

    def _check_width(self, width: int, what: str) -> None:
        check(
            width == self.d_model_,
            f"{what} has {width} columns but this {self.method} dictionary was fitted on "
            f"d_model={self.d_model_}: use activations of the same model and site",
        )

    @abstractmethod
    def _encode(self, X: np.ndarray) -> np.ndarray:
        """``(n, d_model) -> (n, k)``."""

    @abstractmethod
    def _decode(self, Z: np.ndarray) -> np.ndarray:
        """``(n, k) -> (n, d_model)``."""

    # -- compatibility --------------------------------------------------------------------------

    def check_compatible(
        self,
        d_model: int,
        model: str | None = None,
        site: str | None = None,
        layer: int | None = None,
    ) -> None:
        """Refuse activations of another width, model, site or layer than the fitted ones.

        ``None`` on either side means "unknown" and is not compared.
        """
        self._check_fitted()
        info = self.info_
        check(
            d_model == self.d_model_,
            f"dictionary was fitted on d_model={self.d_model_} ({info.model or 'unknown model'})"
            f" but the activations have d_model={d_model} ({model or 'unknown model'}): "
            "use a dictionary fitted on this model",
        )
        pairs: list[tuple[str, object, object]] = [
            ("model", info.model, model),
            ("site", info.site, site),
            ("layer", info.layer, layer),
        ]
        for what, mine, theirs in pairs:
            check(
                mine is None or theirs is None or mine == theirs,
                f"dictionary was fitted on {what} {mine!r} but is applied to {what} {theirs!r}: "
                f"use a dictionary fitted on {what} {theirs!r}",
            )

    # -- persistence ----------------------------------------------------------------------------

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """Every learned array needed to rebuild the fitted object, under fixed names."""

    @abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        """Inverse of :meth:`_state` (``extra`` is what :meth:`_extra_config` returned)."""

    def _extra_config(self) -> dict[str, Any]:
        """Backend-specific JSON saved in ``config.json`` under ``"extra"``."""
        return {}

    def config(self) -> dict[str, Any]:
        """The JSON description written to ``config.json``."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "params": self.get_params(),
            "d_model": self.d_model_,
            "n_components": self.n_components_,
            "info": self.info_.to_dict(),
            "fit_stats": self.fit_stats_,
            "weights": WEIGHTS_FILE,
            "extra": self._extra_config(),
            "scaler": None if self.scaler_ is None else self.scaler_.config(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into folder ``path``, atomically."""
        cfg = self.config()
        tensors = self._state()
        if self.scaler_ is not None:
            tensors.update(self.scaler_.state())
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
            save_tensors(
                tmp / WEIGHTS_FILE,
                tensors,
                {"method": self.method, "info": cfg["info"], "d_model": self.d_model_},
            )
        return Path(path)

    @classmethod
    def _from_saved(
        cls: type[D], cfg: dict[str, Any], tensors: dict[str, torch.Tensor], where: str
    ) -> D:
        params = dict(cfg.get("params") or {})
        try:
            obj = cls(**params)
        except TypeError as e:
            raise WorkbenchError(
                f"{where} has parameters {sorted(params)} that {cls.__name__} does not accept "
                f"({e}); it was saved by another version: refit it"
            ) from e
        obj.d_model_ = int(cfg["d_model"])
        obj.info_ = DictionaryInfo.from_dict(cfg.get("info"))
        obj.fit_stats_ = dict(cfg.get("fit_stats") or {})
        try:
            if cfg.get("scaler"):
                obj.scaler_ = InputScaler.from_saved(cfg["scaler"], tensors)
            obj._load_state(tensors, dict(cfg.get("extra") or {}))
        except KeyError as e:
            raise WorkbenchError(
                f"{where} lacks weight {e} needed by {cls.__name__}: the file is incomplete; "
                "save the dictionary again"
            ) from e
        return obj


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """A contiguous CPU tensor sharing ``a``'s dtype, for saving."""
    return torch.from_numpy(np.ascontiguousarray(a))
