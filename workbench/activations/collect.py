"""Activations of text sets at chosen sites, reduced to rows, for building vectors.

:func:`collect` runs a model over texts in batches and keeps, per text, the activation at the
last token, the mean over tokens, or every token (``positions``). Forward passes stop after the
deepest layer asked for, so a vector at layer 6 of 30 costs a fifth of a full pass. All hooking
goes through :mod:`workbench.model.hooks`.

:func:`mean_residual_norms` gives the mean activation norm at a site over a small fixed neutral
text set; every builder stores it as ``SteeringVector.layer_norms`` so that coefficients can be
given in residual-norm units.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.activations.batches import ROW_POSITIONS
from workbench.corpora import BUILTIN_PREFIX, load_corpus, load_text_set
from workbench.errors import WorkbenchError, check
from workbench.model.hooks import Site, StopForward, default_backend, recording
from workbench.model.load import Model

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_TOKENS = 128
NORM_CORPUS = "builtin:general"
NORM_DOCS = 32
NORM_MAX_TOKENS = 64

TextSpec = str | Sequence[str]


@dataclass
class TextActivations:
    """Rows of activations and the text each row came from.

    Attributes:
        rows: site -> ``(n_rows, d_model)`` (or ``(n_rows, n_heads, d_head)`` for ``z``).
        owner: ``(n_rows,)`` index of the text each row belongs to; for ``last`` and ``mean``
            row ``i`` is text ``i``.
        n_texts: number of texts.
        n_truncated: texts cut to ``max_tokens``.
    """

    rows: dict[Site, torch.Tensor]
    owner: torch.Tensor
    n_texts: int
    n_truncated: int


def texts_recipe(spec: TextSpec, texts: list[str]) -> dict[str, Any]:
    """How to get ``texts`` back: a built-in name (shipped, stable) or the texts themselves.

    Files may change after the vector is made, so their contents are stored; the hash lets a
    rebuild notice a built-in set that changed between versions.
    """
    digest = texts_digest(texts)
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        return {"spec": spec, "sha256": digest}
    source = str(spec) if isinstance(spec, str) else "list"
    return {"texts": list(texts), "source": source, "sha256": digest}


def texts_from_recipe(entry: dict[str, Any], what: str) -> list[str]:
    """Inverse of :func:`texts_recipe`, refusing texts that no longer match their hash."""
    texts = load_corpus(entry["spec"]) if "spec" in entry else list(entry["texts"])
    check(
        texts_digest(texts) == entry.get("sha256"),
        f"the {what} ({entry.get('spec', 'stored texts')}) changed since the vector was made; "
        "build a new vector instead of rebuilding this one",
    )
    return texts


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def check_layers(model: Model, layers: int | Sequence[int]) -> list[int]:
    """Validated, de-duplicated, sorted layer list (at least one)."""
    items = [layers] if isinstance(layers, int) else list(layers)
    check(len(items) > 0, "give at least one layer")
    for layer in items:
        model.check_layer(layer)
    return sorted(set(items))


def check_positions(positions: str, allowed: Sequence[str] = ROW_POSITIONS) -> str:
    check(
        positions in allowed,
        f"unknown positions '{positions}': use one of {', '.join(allowed)}",
    )
    return positions


@torch.no_grad()
def run_sites(model: Model, ids: torch.Tensor, sites: Sequence[Site]) -> dict[Site, torch.Tensor]:
    """One forward pass of ``ids`` ``(batch, pos)``; the activation at each site.

    The pass stops right after the last site fires. Right padding needs no attention mask:
    attention is causal, so pads after a text cannot change its activations.
    """
    backend = default_backend(model)
    ids = ids.to(model.device)
    with recording(model, sites, backend=backend, stop=True) as store:
        try:
            if backend == "hf":
                assert model.hf is not None
                model.hf(input_ids=ids, use_cache=False)
            else:
                model.tl(ids, return_type=None)
        except StopForward:
            pass
    missing = [s for s in sites if s not in store]
    if missing:
        raise WorkbenchError(f"no activation was recorded at {missing[0]} in {model.name}")
    return {s: store[s].float().cpu() for s in sites}


def collect(
    model: Model,
    texts: list[str],
    sites: Sequence[Site],
    positions: str = "last",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> TextActivations:
    """Activations of ``texts`` at ``sites``, reduced by ``positions``.

    ``last``: the last token of each text. ``mean``: the mean over the text's tokens. ``all``:
    every token (one row each). BOS is left out of ``mean`` and ``all``: its activation is the
    same for every text and, in many models, far larger than the others. Texts are batched by
    length to waste little on padding; rows come back in text order.
    """
    check_positions(positions)
    check(batch_size >= 1, f"batch_size {batch_size} must be at least 1")
    check(bool(texts), "no texts to run: give at least one")
    for site in sites:
        site.check(model)
    ids, mask, truncated = model.encode(texts, max_tokens=max_tokens)
    lengths = mask.sum(1)  # (n,)
    first = 1 if model.bos_token_id is not None else 0
    order = torch.argsort(lengths, stable=True)
    parts: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
    owners: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]  # (b,)
        width = int(lengths[idx].max())
        acts = run_sites(model, ids[idx, :width], sites)
        for site, act in acts.items():  # act: (b, pos, ...)
            if not torch.isfinite(act).all():
                raise WorkbenchError(
                    f"non-finite activations at {site.kind} layer {site.layer} of {model.name}; "
                    "the model or its dtype is broken for these texts (try dtype float32)"
                )
            for j, i in enumerate(idx.tolist()):
                n = int(lengths[i])
                lo = min(first, n - 1)  # a text that is only BOS keeps its one row
                if positions == "last":
                    parts[site].append(act[j, n - 1 : n])  # (1, ...)
                elif positions == "mean":
                    parts[site].append(act[j, lo:n].mean(0, keepdim=True))  # (1, ...)
                else:
                    parts[site].append(act[j, lo:n])  # (n_tok, ...)
        for i in idx.tolist():
            n = int(lengths[i])
            k = 1 if positions != "all" else n - min(first, n - 1)
            owners.append(torch.full((k,), i, dtype=torch.long))
    owner = torch.cat(owners)  # (n_rows,)
    back = torch.argsort(owner, stable=True)  # text order, token order kept within a text
    rows = {s: torch.cat(p)[back] for s, p in parts.items()}
    return TextActivations(
        rows=rows, owner=owner[back], n_texts=len(texts), n_truncated=sum(truncated)
    )


def load_contrast(pos_texts: TextSpec, neg_texts: TextSpec) -> tuple[list[str], list[str]]:
    """The positive and negative text sets of a contrast (builtin names, files or lists)."""
    pos = load_text_set(pos_texts, "positive text set")
    neg = load_text_set(neg_texts, "negative text set")
    return pos, neg


def collect_contrast(
    model: Model,
    pos: list[str],
    neg: list[str],
    sites: Sequence[Site],
    positions: str = "last",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[TextActivations, TextActivations]:
    """:func:`collect` for the positive, then the negative texts of a contrast."""
    a = collect(model, pos, sites, positions, batch_size=batch_size, max_tokens=max_tokens)
    b = collect(model, neg, sites, positions, batch_size=batch_size, max_tokens=max_tokens)
    return a, b


_NORMS: dict[tuple[str, int, str, int], float] = {}


def mean_residual_norms(
    model: Model, layers: Sequence[int], site: str = "resid_pre"
) -> dict[int, float]:
    """Mean L2 norm of the activation at ``site`` per layer over a fixed neutral text set.

    The set is the first 32 documents of ``builtin:general`` (at most 64 tokens each), every
    token but BOS. For site ``z`` the norm is of all heads' outputs together (``n_heads *
    d_head``). Cached per process.
    """
    key = (model.name, model.d_model, site)
    todo = sorted({int(x) for x in layers if (*key, int(x)) not in _NORMS})
    if todo:
        docs = load_corpus(NORM_CORPUS, limit=NORM_DOCS)
        sites = [Site(site, layer) for layer in todo]
        acts = collect(model, docs, sites, "all", max_tokens=NORM_MAX_TOKENS)
        for s in sites:
            flat = acts.rows[s].flatten(1)  # (n_tokens, d)
            _NORMS[(*key, s.layer)] = float(flat.norm(dim=-1).mean())
    return {int(x): _NORMS[(*key, int(x))] for x in layers}
