"""Input hygiene before a fit: which store rows a dictionary sees, and in which space.

Measured on SmolLM2-135M at layer 8 of 300 movie-review snippets: rows whose norm is over 3x the
median (the "massive activations" on the first real token and a few others, norm up to ~900
against a median ~110) carry 64% of the variance, so an unscaled PCA's first component is
"first token", not meaning. Two steps, both on by default and recorded in the dictionary's
``fit_stats_["input"]``:

- drop rows whose norm exceeds ``max_norm_ratio`` x the median row norm (``None``: keep all),
  and optionally the first ``skip_first`` real-token positions of every document;
- fit in a scaled space (``scale``: none, center, standardize, whiten; see
  :mod:`dictionaries.scaling`, which also says how a component becomes a model-space steering
  direction).

The same norm threshold marks rows as outliers when a fitted dictionary is inspected
(:func:`outlier_rows`), so top contexts are never the massive-activation rows either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dictionaries.base import Dictionary
from dictionaries.scaling import SCALES, InputScaler
from workbench.activations.store import ActivationStore
from workbench.errors import check

DEFAULT_MAX_NORM_RATIO = 3.0
DEFAULT_SCALE = "standardize"


@dataclass(frozen=True)
class Hygiene:
    """Which rows to drop and how to scale them before a fit (see the module docstring)."""

    max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO
    skip_first: int = 0
    scale: str = DEFAULT_SCALE

    def __post_init__(self) -> None:
        r = self.max_norm_ratio
        check(
            r is None or (math.isfinite(r) and r > 1),
            f"max_norm_ratio={r} must be above 1 (a multiple of the median row norm), or None "
            "to keep every row",
        )
        check(
            isinstance(self.skip_first, int) and self.skip_first >= 0,
            f"skip_first={self.skip_first} must be a whole number >= 0",
        )
        check(self.scale in SCALES, f"unknown scale {self.scale!r}: use one of {', '.join(SCALES)}")

    @classmethod
    def off(cls) -> Hygiene:
        """Every row, unscaled: the raw activations."""
        return cls(max_norm_ratio=None, skip_first=0, scale="none")

    def scaler(self) -> InputScaler | None:
        """A fresh scaler for :attr:`scale` (``None`` for ``none``)."""
        return None if self.scale == "none" else InputScaler(self.scale)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RowSelection:
    """The rows a fit uses: ``keep`` ``(n_rows,)`` bool, and why the others were dropped."""

    keep: np.ndarray
    median_norm: float
    max_norm: float
    norm_threshold: float | None
    dropped_norm: int
    dropped_position: int
    held_out: int

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": int(self.keep.size),
            "rows_used": int(self.keep.sum()),
            "median_norm": self.median_norm,
            "max_norm": self.max_norm,
            "norm_threshold": self.norm_threshold,
            "dropped_norm": self.dropped_norm,
            "dropped_position": self.dropped_position,
            "held_out_rows": self.held_out,
        }


def row_norms(store: ActivationStore, layer: int, batch_size: int = 8192) -> np.ndarray:
    """``(n_rows,)`` float64 L2 norm of every row of ``layer`` (NaN for non-finite rows)."""
    out = np.empty(store.n_rows, dtype=np.float64)
    start = 0
    for batch in store.iter_batches(layer, batch_size):  # (b, width)
        x = batch.double()
        n = x.norm(dim=1).numpy()  # (b,)
        out[start : start + len(n)] = np.where(np.isfinite(n), n, np.nan)
        start += len(n)
    return out


def select_rows(
    store: ActivationStore,
    layer: int,
    hygiene: Hygiene,
    exclude_docs: list[int] | None = None,
    norms: np.ndarray | None = None,
) -> RowSelection:
    """Rows of ``layer`` passing ``hygiene`` and not in ``exclude_docs``.

    The median norm is taken over the rows that are not held out, so the threshold a fit used
    is the one its held-out evaluation and its inspection use too.
    """
    meta = store.rows_meta()
    doc = meta.doc.numpy()
    held = np.isin(doc, np.asarray(exclude_docs or [], dtype=np.int64))  # (n,)
    keep = ~held
    check(bool(keep.any()), "every row of the store is held out: give a larger store")
    norms = row_norms(store, layer) if norms is None else norms
    finite = np.isfinite(norms)
    median = float(np.median(norms[keep & finite])) if (keep & finite).any() else float("nan")
    threshold = None
    dropped_norm = 0
    if hygiene.max_norm_ratio is not None and math.isfinite(median):
        threshold = hygiene.max_norm_ratio * median
        over = keep & finite & (norms > threshold)
        dropped_norm = int(over.sum())
        keep &= ~over
    dropped_pos = 0
    if hygiene.skip_first:
        first = 1 if store.manifest.get("bos") else 0
        early = keep & ((meta.pos.numpy() - first) < hygiene.skip_first)
        dropped_pos = int(early.sum())
        keep &= ~early
    check(
        bool(keep.any()),
        f"hygiene dropped every row (max_norm_ratio={hygiene.max_norm_ratio}, skip_first="
        f"{hygiene.skip_first}): raise --max-norm-ratio or lower --skip-first",
    )
    return RowSelection(
        keep=keep,
        median_norm=median,
        max_norm=float(np.nanmax(norms)) if finite.any() else float("nan"),
        norm_threshold=threshold,
        dropped_norm=dropped_norm,
        dropped_position=dropped_pos,
        held_out=int(held.sum()),
    )


def fit_scaler(
    store: ActivationStore, layer: int, keep: np.ndarray, hygiene: Hygiene, batch_size: int = 8192
) -> InputScaler | None:
    """The hygiene's scaler fitted in one streamed pass over the kept rows (``None``: no scaling)."""
    scaler = hygiene.scaler()
    if scaler is None:
        return None
    start = 0
    for batch in store.iter_batches(layer, batch_size):  # (b, width)
        x = batch.numpy()
        sel = keep[start : start + x.shape[0]] & np.isfinite(x).all(axis=1)  # (b,)
        if sel.any():
            scaler.partial_fit(x[sel])
        start += x.shape[0]
    return scaler.finalize()


def norm_threshold(dictionary: Dictionary) -> float | None:
    """The row-norm threshold ``dictionary`` was fitted with (``None`` when it was fitted without
    one, e.g. outside :func:`workbench.decompose.fit.fit_from_store`)."""
    threshold = (dictionary.fit_stats_.get("input") or {}).get("norm_threshold")
    return None if threshold is None else float(threshold)


def outlier_rows(dictionary: Dictionary, store: ActivationStore, layer: int) -> np.ndarray | None:
    """``(n_rows,)`` bool: rows over :func:`norm_threshold` (``None`` without a threshold)."""
    threshold = norm_threshold(dictionary)
    if threshold is None:
        return None
    norms = row_norms(store, layer)
    return ~(np.isfinite(norms) & (norms <= threshold))
