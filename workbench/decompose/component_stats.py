"""What the store says about each component, without running the model.

For every component ``i`` of a dictionary fitted on a store (codes from
:func:`workbench.decompose.inspect.component_codes`, outlier rows excluded):

- ``variance_share``: variance of code ``i`` over the total variance of the (scaled) rows the
  dictionary sees: the share of the data it carries (for PCA, the explained-variance ratio);
- ``between_doc_share``: the part of code ``i``'s variance that lies *between* documents (the
  variance of per-document mean codes, weighted by row counts) rather than between tokens of
  one document. A property of whole documents (topic, sentiment, register) scores high; a
  token-level feature (punctuation, first token) scores low. ``None`` for stores with one row
  per document (``positions`` last or mean), where it would be 1 by construction;
- ``active_fraction``: for each sign, the fraction of rows whose code lies over 2 standard
  deviations from the mean in that direction: how often the component "fires";
- ``top_docs`` / ``bottom_docs``: the documents with the highest and lowest mean code, each
  with its start and its most active token marked ``[[like this]]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.errors import check

SNIPPET_CHARS = 160


@dataclass
class DocExample:
    """A document at one end of a component: its mean code, start and peak token in context."""

    doc: int
    mean_code: float
    text: str
    peak: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComponentStats:
    """Store-side statistics of one component (see the module docstring)."""

    index: int
    variance_share: float
    between_doc_share: float | None
    active_fraction: dict[str, float]
    top_docs: list[DocExample] = field(default_factory=list)
    bottom_docs: list[DocExample] = field(default_factory=list)

    def docs_for(self, sign: int) -> tuple[list[DocExample], list[DocExample]]:
        """``(docs this sign points to, docs at the other end)``."""
        return (self.top_docs, self.bottom_docs) if sign > 0 else (self.bottom_docs, self.top_docs)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["top_docs"] = [d.to_json() for d in self.top_docs]
        out["bottom_docs"] = [d.to_json() for d in self.bottom_docs]
        return out


def between_doc_share(codes: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """``(k,)``: between-document variance over total variance of ``codes`` ``(n, k)``.

    ``doc`` ``(n,)`` gives each row's document. Rows with NaN codes must be removed first.
    """
    n = codes.shape[0]
    check(n >= 2, "between-document share needs at least 2 rows")
    c64 = codes.astype(np.float64)
    mean = c64.mean(axis=0)  # (k,)
    total = ((c64 - mean) ** 2).sum(axis=0)  # (k,)
    _, inverse, counts = np.unique(doc, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), c64.shape[1]))  # (docs, k)
    np.add.at(sums, inverse, c64)
    doc_means = sums / counts[:, None]  # (docs, k)
    between = (counts[:, None] * (doc_means - mean) ** 2).sum(axis=0)  # (k,)
    return between / np.where(total > 0, total, 1.0)


def doc_mean_codes(codes: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(doc ids (D,), mean code per document (D, k))`` over rows with finite codes."""
    docs, inverse, counts = np.unique(doc, return_inverse=True, return_counts=True)
    sums = np.zeros((len(docs), codes.shape[1]))  # (D, k)
    np.add.at(sums, inverse, codes.astype(np.float64))
    return docs, sums / counts[:, None]


def scaled_total_variance(
    dictionary: Dictionary, store: ActivationStore, layer: int, rows: np.ndarray
) -> float:
    """Total variance of the rows ``rows`` (bool ``(n_rows,)``) in the space the dictionary was
    fitted in (its scaler applied), summed over dimensions."""
    scaler = dictionary.scaler_
    n, s1, s2 = 0, None, None
    start = 0
    for batch in store.iter_batches(layer, 8192):  # (b, width)
        x = batch.numpy()[rows[start : start + batch.shape[0]]]
        start += batch.shape[0]
        if not len(x):
            continue
        z = (x if scaler is None else scaler.transform(x)).astype(np.float64)  # (b', width)
        s1 = z.sum(0) if s1 is None else s1 + z.sum(0)
        s2 = (z**2).sum(0) if s2 is None else s2 + (z**2).sum(0)
        n += len(z)
    check(n >= 2 and s1 is not None and s2 is not None, "fewer than 2 usable rows in the store")
    assert s1 is not None and s2 is not None
    return float((s2 / n - (s1 / n) ** 2).sum() * n / (n - 1))


def _example(
    store: ActivationStore, doc: int, mean: float, rows: np.ndarray, codes: np.ndarray, sign: int
) -> DocExample:
    """Document ``doc``'s start and its most active row (``sign`` picks the end) in context."""
    record = store.docs()[doc]
    text = " ".join(str(record["text"]).split())
    snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
    peak = ""
    if len(rows):
        best = int(rows[np.argmax(sign * codes)])
        left, token, right = store.context(best, 6)
        peak = " ".join(f"{left}[[{token}]]{right}".split())
    return DocExample(doc=doc, mean_code=float(mean), text=snippet, peak=peak)


def component_stats(
    dictionary: Dictionary,
    store: ActivationStore,
    layer: int,
    codes: np.ndarray,
    *,
    n_docs: int = 3,
) -> list[ComponentStats]:
    """:class:`ComponentStats` of every column of ``codes`` ``(n_rows, k)`` (NaN rows skipped).

    ``codes`` are :func:`~workbench.decompose.inspect.component_codes` of all ``k`` components.
    """
    check(codes.ndim == 2 and codes.shape[0] == store.n_rows, "codes must be (store rows, k)")
    ok = np.isfinite(codes).all(axis=1)  # (n,)
    check(int(ok.sum()) >= 2, "fewer than 2 rows with finite codes: capture more text")
    doc_all = store.rows_meta().doc.numpy()
    c, doc = codes[ok].astype(np.float64), doc_all[ok]
    var = c.var(axis=0, ddof=1)  # (k,)
    total = scaled_total_variance(dictionary, store, layer, ok)
    one_row_per_doc = len(np.unique(doc)) == len(doc)
    between = None if one_row_per_doc else between_doc_share(c, doc)
    z = (c - c.mean(0)) / np.where(c.std(0) > 0, c.std(0), 1.0)  # (n, k)
    docs, means = doc_mean_codes(c, doc)
    row_ids = np.flatnonzero(ok)
    out = []
    for i in range(c.shape[1]):
        order = np.argsort(means[:, i], kind="stable")
        ends = {1: order[::-1][:n_docs], -1: order[:n_docs]}
        examples = {}
        for sign, picks in ends.items():
            examples[sign] = [
                _example(
                    store,
                    int(docs[j]),
                    means[j, i],
                    row_ids[doc == docs[j]],
                    c[doc == docs[j], i],
                    sign,
                )
                for j in picks
            ]
        out.append(
            ComponentStats(
                index=i,
                variance_share=float(var[i] / total) if total > 0 else 0.0,
                between_doc_share=None if between is None else float(between[i]),
                active_fraction={
                    "pos": float((z[:, i] > 2).mean()),
                    "neg": float((z[:, i] < -2).mean()),
                },
                top_docs=examples[1],
                bottom_docs=examples[-1],
            )
        )
    return out
