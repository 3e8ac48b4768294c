"""A dictionary against its store and model: held-out fitting and the spliced next-token loss.

On held-out text the model's next-token loss (mean cross-entropy in nats per predicted token) is
measured three ways, with one site at one layer

- ``clean``: left alone;
- ``spliced``: replaced by the dictionary's reconstruction ``decode(encode(x))``;
- ``zero``: replaced by zeros (zero-ablation), the "layer is useless" reference; and optionally
- ``mean``: replaced by a fixed mean activation (mean-ablation), a gentler reference.

A good dictionary has ``loss_spliced`` close to ``loss_clean`` and far below ``loss_zero``;
``recovered`` is ``(zero - spliced) / (zero - clean)`` (1 is perfect; None when zero-ablation
does not raise the loss, as in a random model, where the fraction means nothing).

Which positions are replaced: every real token except BOS. Activation stores never hold BOS
(its activation is the same for every text and often far larger than the others), so a
dictionary has never seen it and its reconstruction of BOS says nothing about the dictionary;
BOS keeps its clean activation in every run, including zero- and mean-ablation, so the three
numbers differ only where the dictionary is in play. Padding is never scored.

>>> q = spliced_loss(pca, model, ["The cat sat on the mat."], layer=6)   # doctest: +SKIP
>>> q.loss_clean, q.loss_spliced, q.loss_zero                             # doctest: +SKIP

For a store: :func:`heldout_docs` picks documents to hold out, :func:`fit_from_store` fits any
registered method on the other rows (streaming for PCA), and :func:`evaluate_heldout` measures
reconstruction quality on the held-out rows and the spliced loss on the held-out texts. This is
what ``workbench decompose`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

import dictionaries
from dictionaries.base import Dictionary, DictionaryInfo
from dictionaries.linear import PCA
from dictionaries.pretrained import PretrainedSAE
from dictionaries.quality import reconstruction_quality
from workbench.activations.store import ActivationStore
from workbench.decompose.hygiene import (
    Hygiene,
    fit_scaler,
    norm_threshold,
    outlier_rows,
    select_rows,
)
from workbench.errors import check
from workbench.measure.metrics import token_logprobs
from workbench.model.hooks import Site, default_backend, hooks_applied
from workbench.model.load import Model
from workbench.steer.forward import steered_logits

Replace = Callable[[torch.Tensor], torch.Tensor]  # (rows, width) -> (rows, width)


@dataclass
class SplicedLoss:
    """Next-token losses (nats per predicted token) with one site replaced; see the module."""

    loss_clean: float
    loss_spliced: float
    loss_zero: float
    loss_mean: float | None
    recovered: float | None
    n_texts: int
    n_tokens: int
    site: str
    layer: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def site_width(model: Model, site: str) -> int:
    """Width of one flattened activation row at ``site``."""
    return model.n_heads * model.d_head if site == "z" else model.d_model


def _replacing(keep_first: int, replace: Replace) -> Callable[[torch.Tensor], torch.Tensor]:
    """A hook that replaces every position from ``keep_first`` on with ``replace`` of it."""

    def fn(act: torch.Tensor) -> torch.Tensor:
        feat = act.shape[2:]
        flat = act[:, keep_first:].reshape(-1, int(np.prod(feat)))  # (rows, width)
        new = replace(flat.float()).to(act.dtype).view(act.shape[0], -1, *feat)
        return torch.cat([act[:, :keep_first], new], dim=1)  # (batch, pos, *feat)

    return fn


def _reconstruct(dictionary: Dictionary) -> Replace:
    """Rows over the norm threshold the dictionary was fitted with (:mod:`hygiene`) keep their
    clean activation, like BOS: the dictionary never saw such rows and says nothing of them."""
    threshold = norm_threshold(dictionary)

    def fn(flat: torch.Tensor) -> torch.Tensor:
        recon = torch.from_numpy(dictionary.reconstruct(flat.detach().cpu().numpy()))
        recon = recon.to(flat.device)  # (rows, width)
        if threshold is not None:
            over = flat.norm(dim=-1) > threshold  # (rows,)
            recon[over] = flat[over].to(recon.dtype)
        return recon

    return fn


def _mean_loss(
    model: Model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    site: Site,
    replace: Replace | None,
    backend: str,
    batch_size: int,
) -> tuple[float, int]:
    """Summed next-token NLL over all scored tokens of ``ids`` ``(n, pos)``, and their count."""
    first = 1 if model.bos_token_id is not None else 0
    hooks = [] if replace is None else [(site, _replacing(first, replace))]
    total, count = 0.0, 0
    with hooks_applied(model, hooks, backend=backend):
        for a in range(0, ids.shape[0], batch_size):
            chunk = (ids[a : a + batch_size], mask[a : a + batch_size])
            out = steered_logits(model, chunk, backend=backend, batch_size=batch_size)
            lp = token_logprobs(out.logits, out.ids, out.mask).double()  # (b, pos - 1)
            scored = out.mask[:, 1:].bool() & out.mask[:, :-1].bool()  # (b, pos - 1)
            total -= float(lp.sum())
            count += int(scored.sum())
    return total, count


def spliced_loss(
    dictionary: Dictionary,
    model: Model,
    texts: Sequence[str],
    *,
    layer: int | None = None,
    site: str | None = None,
    mean: np.ndarray | torch.Tensor | None = None,
    max_tokens: int = 128,
    batch_size: int = 8,
) -> SplicedLoss:
    """Clean, spliced-reconstruction and zero-ablation next-token loss on ``texts``.

    ``layer`` and ``site`` default to the dictionary's own (``info_``); a dictionary fitted on
    another model, width, site or layer is refused. ``mean`` (a ``(width,)`` activation, e.g.
    the store's mean row) adds the mean-ablation loss. Texts are cut to ``max_tokens`` tokens.
    """
    info = dictionary.info_
    layer = info.layer if layer is None else layer
    site = site or info.site
    check(layer is not None, "the dictionary does not record its layer: pass layer=")
    check(site is not None, "the dictionary does not record its site: pass site=")
    assert layer is not None and site is not None
    where = Site(site, int(layer)).check(model)
    width = site_width(model, site)
    dictionary.check_compatible(width, model=model.name, site=site, layer=int(layer))
    docs = [t for t in texts if isinstance(t, str) and t.strip()]
    check(bool(docs), "no held-out texts to measure the spliced loss on: give at least one")
    ids, mask, _ = model.encode(docs, max_tokens=max_tokens)  # (n, pos) each
    check(
        int(mask.sum(1).min()) >= 2,
        "a held-out text has fewer than 2 tokens, so nothing is predicted: drop it",
    )
    backend = default_backend(model)

    def run(replace: Replace | None) -> float:
        total, count = _mean_loss(model, ids, mask, where, replace, backend, batch_size)
        return total / count

    clean = run(None)
    spliced = run(_reconstruct(dictionary))
    zero = run(torch.zeros_like)
    loss_mean: float | None = None
    if mean is not None:
        m = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)  # (width,)
        check(m.numel() == width, f"mean has {m.numel()} entries; the site has width {width}")
        loss_mean = run(lambda flat: m.to(flat.device).expand_as(flat))
    scored = int((mask[:, 1:].bool() & mask[:, :-1].bool()).sum())
    gap = zero - clean
    return SplicedLoss(
        loss_clean=clean,
        loss_spliced=spliced,
        loss_zero=zero,
        loss_mean=loss_mean,
        recovered=(zero - spliced) / gap if gap > 1e-12 else None,
        n_texts=len(docs),
        n_tokens=scored,
        site=site,
        layer=int(layer),
    )


# --------------------------------------------------------------------------- fitting on a store, held-out evaluation


def _row_batches(
    store: ActivationStore, layer: int, keep: np.ndarray, batch_size: int = 8192
) -> Iterator[torch.Tensor]:
    start = 0
    for batch in store.iter_batches(layer, batch_size):  # (b, width), in row order
        sel = batch[torch.from_numpy(keep[start : start + len(batch)])]
        start += len(batch)
        if len(sel):
            yield sel


def make_dictionary(method: str, k: int | None, params: dict[str, Any] | None = None) -> Dictionary:
    """An unfitted dictionary of ``method`` with ``k`` components and extra ``params``.

    ``pretrained-sae`` takes ``params={"folder": PATH}`` (a SAELens folder) and no ``k``.
    """
    kw = dict(params or {})
    if method == "pretrained-sae":
        folder = kw.pop("folder", None)
        check(folder is not None, "pretrained-sae needs --param folder=PATH (a SAELens folder)")
        check(not kw, f"pretrained-sae takes only folder=, not {', '.join(sorted(kw))}")
        return PretrainedSAE.from_folder(str(folder))
    cls = dictionaries.get(method)
    check("n_components" not in kw, "give the number of components with k (--k), not a param")
    if "n_components" in cls._param_names():
        check(k is not None and k >= 1, f"k={k} must be a positive integer")
        kw["n_components"] = k
    return dictionaries.create(method, **kw)


def fit_from_store(
    dictionary: Dictionary,
    store: ActivationStore,
    layer: int,
    *,
    exclude_docs: list[int] | None = None,
    hygiene: Hygiene | None = None,
) -> Dictionary:
    """Fit ``dictionary`` on ``layer`` of ``store`` (rows of ``exclude_docs`` held out).

    ``hygiene`` (default :class:`~workbench.decompose.hygiene.Hygiene`: drop rows over 3x the
    median norm, standardize; ``Hygiene.off()`` for raw rows) is applied first and recorded in
    ``fit_stats_["input"]``. PCA streams the store (memory stays at one shard plus a ``d_model``
    x ``d_model`` matrix); other methods load the rows. Rows holding NaN or inf are dropped and
    counted in ``fit_stats_["dropped_nonfinite_rows"]``. The dictionary records the store's
    model, site and layer.
    """
    hygiene = Hygiene() if hygiene is None else hygiene
    store.check_layer(layer)
    info = DictionaryInfo(
        model=str(store.manifest.get("model")),
        site=store.site,
        layer=layer,
        hook_point=Site(store.site, layer).tl_name,
    )
    # Width and row count are known now: refuse a k they cannot support before the slow passes.
    dictionary._validate_params(store.d_model)
    rows = select_rows(store, layer, hygiene, exclude_docs)
    dictionary.check_rows(int(rows.keep.sum()))
    scaler = fit_scaler(store, layer, rows.keep, hygiene)
    if isinstance(dictionary, PCA):
        dictionary.fit_stream(_row_batches(store, layer, rows.keep), info=info, scaler=scaler)
    else:
        X = store.load(layer)[torch.from_numpy(rows.keep)]  # (n_kept, width)
        dictionary.fit(X, info=info, scaler=scaler)
    dictionary.fit_stats_["input"] = {**hygiene.to_json(), **rows.to_json()}
    return dictionary


def heldout_docs(store: ActivationStore, fraction: float = 0.1, seed: int = 0) -> list[int]:
    """A seeded random ``fraction`` of the store's documents (at least one; none if it has one).

    Held out by document, not by row: rows of one document are alike, so a row split would
    leak.
    """
    check(0 < fraction < 1, f"held-out fraction {fraction} must lie strictly between 0 and 1")
    docs = np.unique(store.rows_meta().doc.numpy())
    if len(docs) < 2:
        return []
    n = max(1, round(fraction * len(docs)))
    return sorted(int(d) for d in np.random.default_rng(seed).choice(docs, n, replace=False))


def evaluate_heldout(
    dictionary: Dictionary,
    store: ActivationStore,
    layer: int,
    docs: list[int],
    *,
    model: Model | None = None,
    max_rows: int = 100_000,
    n_texts: int = 32,
    max_tokens: int = 128,
) -> dict[str, Any]:
    """Reconstruction quality on the rows of ``docs`` (at most ``max_rows``, sampled) and, with
    ``model``, the spliced losses on their texts (at most ``n_texts``) with the mean-ablation
    loss at the held-out mean. Empty ``docs`` measure on every row (and say so).

    Rows over the norm threshold the dictionary was fitted with are left out of the quality
    numbers (counted in ``heldout_rows_over_norm_threshold``) and keep their clean activation in
    the spliced run: the dictionary is judged on the rows it was made for."""
    meta_doc = store.rows_meta().doc.numpy()
    rows = np.flatnonzero(np.isin(meta_doc, docs)) if docs else np.arange(store.n_rows)
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
    outliers = outlier_rows(dictionary, store, layer)
    n_outliers = 0
    if outliers is not None:
        n_outliers = int(outliers[rows].sum())
        rows = rows[~outliers[rows]]
        check(len(rows) > 0, "every held-out row is over the fit's norm threshold: hold out more")
    X = store.memmap(layer)[rows].float().numpy()  # (m, width)
    out: dict[str, Any] = {"heldout_docs": len(docs), "heldout_rows": int(len(rows))}
    if outliers is not None:
        out["heldout_rows_over_norm_threshold"] = n_outliers
    if not docs:
        out["note"] = "the store has one document: quality is measured on the fitted rows"
    out.update(reconstruction_quality(dictionary, X))
    if model is not None:
        finite = X[np.isfinite(X).all(axis=1)]
        texts = [store.docs()[d]["text"] for d in (docs or [int(meta_doc[0])])[:n_texts]]
        loss = spliced_loss(
            dictionary,
            model,
            texts,
            layer=layer,
            site=store.site,
            mean=finite.mean(0) if len(finite) else None,
            max_tokens=max_tokens,
        )
        out.update(loss.to_json())
    return out
