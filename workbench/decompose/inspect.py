"""Reading one dictionary component: its contexts, its code histogram, its logit lens, its cosines.

For a component ``i`` of a fitted dictionary and the activation store it was fitted on:

- :func:`top_contexts`: the store rows where code ``i`` is largest (or most negative), each as
  ``left [[token]] right`` text traced back through the store's documents;
- :func:`activation_histogram`: counts and bin edges of code ``i`` over the store, as data;
- :func:`logit_lens`: the tokens the direction promotes and suppresses when pushed through the
  model's final norm and unembedding (see that function for how the norm is handled);
- :func:`cosine_report`: cosine similarity to the other components and to given vectors.

:func:`inspect_components` does all four for several components with one pass over the store.
Every result is a dataclass with ``to_json()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.decompose.hygiene import norm_threshold
from workbench.errors import check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.model.readout import final_norm, norm_bias, unembedding
from workbench.vectors.vector import SteeringVector

LENS_MODES = ("direction", "delta")
LENS_RANKS = ("logit", "cosine")
_FINAL_MEANS: dict[tuple[str, int], torch.Tensor] = {}


@dataclass
class Context:
    """One store row: its code, where it came from, and the text around its token."""

    row: int
    activation: float
    doc: int
    pos: int
    left: str
    token: str
    right: str

    @property
    def marked(self) -> str:
        """``left [[token]] right``: the token marked inside its context."""
        return f"{self.left}[[{self.token}]]{self.right}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "marked": self.marked}


@dataclass
class Histogram:
    """Code values over the store: ``counts[j]`` rows fall in ``[edges[j], edges[j + 1])``."""

    counts: list[int]
    edges: list[float]
    n: int
    mean: float
    std: float
    fraction_active: float  # rows with |code| > 1e-8 (below 1 for sparse dictionaries)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenScore:
    token: str
    id: int
    logit: float


@dataclass
class LogitLens:
    """Tokens a direction pushes up (``promoted``) and down (``suppressed``), strongest first."""

    promoted: list[TokenScore]
    suppressed: list[TokenScore]
    mode: str
    rank: str = "logit"
    alpha: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComponentReport:
    """Everything :func:`inspect_components` says about one component."""

    index: int
    method: str
    layer: int | None
    site: str | None
    top: list[Context]
    bottom: list[Context]
    histogram: Histogram
    lens: LogitLens | None
    similar: list[dict[str, Any]] = field(default_factory=list)
    vectors: dict[str, float] = field(default_factory=dict)
    explained_variance_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "method": self.method,
            "layer": self.layer,
            "site": self.site,
            "explained_variance_ratio": self.explained_variance_ratio,
            "top": [c.to_json() for c in self.top],
            "bottom": [c.to_json() for c in self.bottom],
            "histogram": self.histogram.to_json(),
            "lens": None if self.lens is None else self.lens.to_json(),
            "similar": self.similar,
            "vectors": self.vectors,
        }


# --------------------------------------------------------------------------- store side


def check_store(dictionary: Dictionary, store: ActivationStore, layer: int) -> None:
    """Refuse a store of another model, width, site or layer than the dictionary's (names both)."""
    store.check_layer(layer)
    dictionary.check_compatible(
        store.d_model, model=str(store.manifest.get("model")), site=store.site, layer=layer
    )


def component_codes(
    dictionary: Dictionary,
    store: ActivationStore,
    layer: int,
    indices: Sequence[int],
    batch_size: int = 4096,
) -> np.ndarray:
    """Codes of components ``indices`` for every store row, ``(n_rows, len(indices))`` float32.

    One streamed pass; memory is 4 bytes per row and component (1M rows x 16 = 64 MB).
    Rows holding NaN or inf, and rows over the norm threshold the dictionary was fitted with
    (:mod:`workbench.decompose.hygiene`), get code NaN (they are skipped by the functions below).
    """
    check_store(dictionary, store, layer)
    k = dictionary.n_components_
    for i in indices:
        check(0 <= int(i) < k, f"component {i} is out of range: the dictionary has 0..{k - 1}")
    cols = np.asarray([int(i) for i in indices], dtype=np.int64)
    out = np.empty((store.n_rows, len(cols)), dtype=np.float32)
    threshold = norm_threshold(dictionary)
    start = 0
    for batch in store.iter_batches(layer, batch_size):  # (b, width)
        x = batch.numpy()
        finite = np.isfinite(x).all(axis=1)  # (b,)
        if threshold is not None:
            finite &= np.linalg.norm(x.astype(np.float64), axis=1) <= threshold
        codes = np.full((x.shape[0], len(cols)), np.nan, dtype=np.float32)
        if finite.any():
            codes[finite] = dictionary.encode(x[finite])[:, cols]
        out[start : start + x.shape[0]] = codes
        start += x.shape[0]
    return out


def top_contexts(
    store: ActivationStore,
    codes: np.ndarray,
    k: int = 10,
    *,
    window: int = 8,
    largest: bool = True,
) -> list[Context]:
    """The ``k`` rows with the largest (or, ``largest=False``, most negative) ``codes`` ``(n,)``.

    Ties keep row order. Each row is traced to its document: ``window`` tokens each side.
    """
    values = np.asarray(codes, dtype=np.float64).reshape(-1)  # (n,)
    check(values.size == store.n_rows, f"{values.size} codes for a store of {store.n_rows} rows")
    keyed = np.where(np.isfinite(values), values if largest else -values, -np.inf)
    order = np.argsort(-keyed, kind="stable")[: max(0, k)]
    meta = store.rows_meta()
    out: list[Context] = []
    for row in order.tolist():
        if not np.isfinite(keyed[row]):
            break
        left, token, right = store.context(row, window)
        out.append(
            Context(
                row, float(values[row]), int(meta.doc[row]), int(meta.pos[row]), left, token, right
            )
        )
    return out


def activation_histogram(codes: np.ndarray, bins: int = 40) -> Histogram:
    """Histogram of a component's codes ``(n,)`` (NaN skipped) as counts and bin edges."""
    check(bins >= 1, f"bins={bins} must be at least 1")
    values = np.asarray(codes, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    check(values.size > 0, "no finite codes to histogram")
    counts, edges = np.histogram(values, bins=bins)
    return Histogram(
        counts=[int(c) for c in counts],
        edges=[float(e) for e in edges],
        n=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        fraction_active=float((np.abs(values) > 1e-8).mean()),
    )


# --------------------------------------------------------------------------- model side


def _final_norm(model: Model, x: torch.Tensor, drop_bias: bool) -> torch.Tensor:
    """The model's final norm applied to ``x`` ``(n, d_model)``; LayerNorm bias optional."""
    ln = final_norm(model)
    if ln is None:  # a model without a final norm
        return x
    y: torch.Tensor = ln(x[:, None, :])[:, 0]  # (n, d_model)
    b = norm_bias(ln)
    return y - b if drop_bias and b is not None else y


def final_residual_mean(model: Model) -> torch.Tensor:
    """Mean residual stream after the last block, ``(d_model,)``, over a fixed neutral text set.

    The set is the one :func:`workbench.activations.collect.mean_residual_norms` uses. Cached.
    """
    from workbench.activations.collect import NORM_CORPUS, NORM_DOCS, NORM_MAX_TOKENS, collect
    from workbench.corpora import load_corpus

    key = (model.name, model.d_model)
    if key not in _FINAL_MEANS:
        site = Site("resid_post", model.n_layers - 1)
        docs = load_corpus(NORM_CORPUS, limit=NORM_DOCS)
        rows = collect(model, docs, [site], "all", max_tokens=NORM_MAX_TOKENS).rows[site]
        _FINAL_MEANS[key] = rows.float().mean(0)  # (d_model,)
    return _FINAL_MEANS[key]


@torch.no_grad()
def logit_lens(
    model: Model,
    direction: np.ndarray | torch.Tensor,
    k: int = 10,
    *,
    mode: str = "direction",
    rank: str = "logit",
    alpha: float = 1.0,
    base: np.ndarray | torch.Tensor | None = None,
) -> LogitLens:
    """Top promoted and suppressed tokens of a residual-stream ``direction`` ``(d_model,)``.

    How the final norm is handled (``mode``):

    - ``"direction"`` (default): ``logits = (ln_final(d) - b_ln) @ W_U``, the final norm applied
      to the direction directly. For RMSNorm this is ``(w * d / rms(d)) @ W_U``; for LayerNorm
      the direction is also mean-centred, and the norm's bias ``b_ln`` and the unembedding bias
      ``b_U`` are left out because they add the same logits for every direction. The ranking
      does not depend on the direction's length.
    - ``"delta"``: ``logits = (ln_final(mu + a * d) - ln_final(mu)) @ W_U``: the change in the
      final logits when ``a * d`` is added to a typical final residual ``mu`` (``base``, by
      default :func:`final_residual_mean`), with ``a = alpha * |mu|`` for unit ``d``. This
      includes how the norm's rescaling shrinks a push on a large residual.

    Both pretend the direction reaches the last layer unchanged, which is what a logit lens does.

    Ranking (``rank``): ``"logit"`` ranks tokens by that logit change; ``"cosine"`` divides it
    by each token's unembedding norm first. In some models a few rare tokens have unembedding
    columns several times longer than the rest and top the logit ranking of almost every
    direction (in SmolLM2-135M even the lens of the unembedding of " wedding" ranks " strugg"
    first and " wedding" 441st by logit, but first by cosine); ``"cosine"`` reads past them.
    """
    check(mode in LENS_MODES, f"unknown lens mode {mode!r}: use one of {', '.join(LENS_MODES)}")
    check(rank in LENS_RANKS, f"unknown lens rank {rank!r}: use one of {', '.join(LENS_RANKS)}")
    check(k >= 1, f"k={k} must be at least 1")
    param = unembedding(model)
    d = torch.as_tensor(np.asarray(direction, dtype=np.float32)).reshape(-1)  # (d_model,)
    check(
        d.numel() == model.d_model,
        f"direction has {d.numel()} entries but {model.name} has d_model={model.d_model}",
    )
    check(bool(torch.isfinite(d).all()) and float(d.norm()) > 0, "direction is zero or not finite")
    d = d.to(param)
    used_alpha: float | None = None
    if mode == "direction":
        h = _final_norm(model, d[None], drop_bias=True)[0]  # (d_model,)
    else:
        mu = final_residual_mean(model) if base is None else torch.as_tensor(base).reshape(-1)
        mu = mu.to(param)
        used_alpha = float(alpha) * float(mu.norm())
        pushed = torch.stack([mu + used_alpha * d / d.norm(), mu])  # (2, d_model)
        normed = _final_norm(model, pushed, drop_bias=False)
        h = normed[0] - normed[1]  # (d_model,)
    W_U = unembedding(model)  # (d_model, vocab)
    logits = (h @ W_U).float()  # (vocab,)
    if rank == "cosine":
        logits = logits / W_U.norm(dim=0).float().clamp_min(1e-12)  # (vocab,)
    n = min(k, logits.numel())
    return LogitLens(
        promoted=_scores(model, logits, torch.topk(logits, n).indices),
        suppressed=_scores(model, logits, torch.topk(-logits, n).indices),
        mode=mode,
        rank=rank,
        alpha=used_alpha,
    )


def _scores(model: Model, logits: torch.Tensor, ids: torch.Tensor) -> list[TokenScore]:
    tok = model.tokenizer
    return [TokenScore(str(tok.decode([i])), int(i), float(logits[i])) for i in ids.tolist()]


# --------------------------------------------------------------------------- cosines


def _flat_vector(v: Any, layer: int | None) -> np.ndarray:
    if isinstance(v, SteeringVector):
        if layer is not None and layer in v.directions:
            t = v.directions[layer]
        else:
            check(len(v.directions) == 1, f"vector has no layer {layer}; it has {v.layers}")
            t = next(iter(v.directions.values()))
        t = t.mean(0) if (t.dim() == 2 and v.site != "z") else t  # aligned: its mean row
        return t.reshape(-1).double().numpy()
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, np.float64).ravel()


def cosine_report(
    dictionary: Dictionary,
    index: int,
    vectors: Mapping[str, Any] | None = None,
    top: int = 5,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Cosines of component ``index``: the ``top`` most similar other components (by |cos|,
    signed values kept) and each named vector in ``vectors`` (arrays or SteeringVectors)."""
    comps = np.asarray(dictionary.directions_, dtype=np.float64)  # (k, width)
    cos = comps @ comps[index]  # (k,) rows are unit norm
    others = [j for j in np.argsort(-np.abs(cos), kind="stable").tolist() if j != index][:top]
    similar = [{"index": int(j), "cosine": float(cos[j])} for j in others]
    named: dict[str, float] = {}
    for name, v in (vectors or {}).items():
        flat = _flat_vector(v, dictionary.info_.layer)
        check(
            flat.size == comps.shape[1],
            f"vector {name!r} has width {flat.size}; the dictionary has {comps.shape[1]}",
        )
        norm = float(np.linalg.norm(flat))
        named[name] = float(comps[index] @ flat / norm) if norm > 0 else 0.0
    return similar, named


def atom_cosines(dictionary: Dictionary) -> np.ndarray:
    """Cosine similarity of every pair of components, ``(k, k)``."""
    comps = np.asarray(dictionary.directions_, dtype=np.float64)
    return comps @ comps.T


# --------------------------------------------------------------------------- together


def most_common_token(contexts: Sequence[Context]) -> str | None:
    """The token text seen most often among ``contexts`` (first seen wins ties)."""
    if not contexts:
        return None
    return Counter(c.token for c in contexts).most_common(1)[0][0]


def inspect_components(
    dictionary: Dictionary,
    store: ActivationStore,
    *,
    layer: int | None = None,
    indices: Sequence[int] | None = None,
    model: Model | None = None,
    vectors: Mapping[str, Any] | None = None,
    top_k: int = 10,
    window: int = 8,
    bins: int = 40,
    lens_k: int = 10,
    lens_rank: str = "logit",
) -> list[ComponentReport]:
    """A :class:`ComponentReport` per component (default: all), with one pass over the store.

    The logit lens needs ``model`` (and a residual-stream site); it is ``None`` otherwise.
    """
    layer = dictionary.info_.layer if layer is None else layer
    check(layer is not None, "the dictionary does not record its layer: pass layer=")
    assert layer is not None
    chosen = list(range(dictionary.n_components_)) if indices is None else list(indices)
    codes = component_codes(dictionary, store, layer, chosen)  # (n_rows, len(chosen))
    evr = getattr(dictionary, "explained_variance_ratio_", None)
    reports = []
    for col, i in enumerate(chosen):
        column = codes[:, col]  # (n_rows,)
        signed = bool(np.nanmin(column) < 0)  # PCA/ICA codes run both ways; SAE codes do not
        similar, named = cosine_report(dictionary, i, vectors)
        lens = None
        if model is not None and store.site != "z":
            lens = logit_lens(model, dictionary.directions_[i], lens_k, rank=lens_rank)
        reports.append(
            ComponentReport(
                index=int(i),
                method=dictionary.method,
                layer=layer,
                site=store.site,
                top=top_contexts(store, column, top_k, window=window),
                bottom=top_contexts(store, column, top_k, window=window, largest=False)
                if signed
                else [],
                histogram=activation_histogram(column, bins),
                lens=lens,
                similar=similar,
                vectors=named,
                explained_variance_ratio=None if evr is None else float(evr[i]),
            )
        )
    return reports
