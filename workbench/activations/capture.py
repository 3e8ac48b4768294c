"""Capture activations over a corpus into an on-disk store (read it with :mod:`workbench.activations.store`).

Speed: the forward pass is cut off right after the deepest requested site (a hook raises once
that site's activation is recorded), so nothing past it is computed, not even the unembedding.
Documents are sorted by length within chunks of ``CHUNK_DOCS`` and batched with right padding,
which leaves real tokens' activations exactly as in an unpadded run (causal attention never looks
ahead to the padding). The transformers twin (``model.hf``) runs the forward when the model has
one (it is faster); TransformerLens otherwise, and for ``resid_mid``, which only it exposes.

Memory: one batch of activations plus one shard of buffered rows, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from workbench.activations.batches import (
    ROW_POSITIONS,
    batches,
    doc_records,
    row_count,
    select_rows,
    token_counts,
)
from workbench.activations.store import DTYPES, FORMAT, VERSION
from workbench.activations.writer import RowBatch, StoreWriter, claim_store
from workbench.corpora import load_corpus
from workbench.errors import check
from workbench.model.hooks import Site, StopForward, default_backend, recording
from workbench.model.load import Model

log = logging.getLogger(__name__)

RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
DEFAULT_SHARD_ROWS = 16384


@dataclass
class CaptureProgress:
    """Passed to the ``progress`` callback after every batch."""

    docs_done: int
    n_docs: int
    tokens_done: int  # including tokens skipped on resume because a shard already holds them
    tokens_total: int
    tokens_run: int  # through the model in this run
    rows: int  # rows in completed shards
    shards: int
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_run / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class CaptureResult:
    """What :func:`capture` did. ``tokens``/``rows`` count the whole store; speed is this run's."""

    path: Path
    model: str
    site: str
    layers: list[int]
    positions: str
    dtype: str
    d_model: int
    tokens: int
    rows: int
    docs: int
    shards: int
    tokens_per_s: float
    elapsed_s: float
    truncated: int
    truncation_limit: int
    resumed: bool
    already_complete: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class _Plan:
    """What one capture runs, fixed before the first forward pass (see :func:`_plan`)."""

    docs: list[str]
    layers: list[int]
    site: str
    positions: str
    dtype: str
    backend: str
    batch_size: int
    limit: int  # tokens kept per document, BOS included
    first: int  # 1 when the model prepends BOS, whose row is never stored
    counts: list[int]  # tokens per document after truncation, BOS included
    truncated: list[int]  # indices of the documents cut to ``limit``

    @property
    def kind_sites(self) -> list[Site]:
        """The sites whose activations are stored."""
        return [Site(self.site, layer) for layer in self.layers]

    @property
    def norm_sites(self) -> list[Site]:
        """The residual sites whose norms go into the manifest (the site itself if residual)."""
        return [Site(_norm_kind(self.site), layer) for layer in self.layers]

    def real_tokens(self, lengths: list[int]) -> int:
        """Tokens of documents with these lengths that yield rows (BOS excluded)."""
        return sum(max(0, n - self.first) for n in lengths)


def capture(
    model: Model,
    corpus: str | os.PathLike[str] | Sequence[str],
    layers: int | Sequence[int],
    *,
    site: str = "resid_pre",
    positions: str = "all",
    max_tokens: int | None = None,
    batch_size: int = 16,
    dtype: str = "float16",
    out: str | os.PathLike[str],
    resume: bool = False,
    overwrite: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: Callable[[CaptureProgress], None] | None = None,
    progress_bar: bool = True,
    backend: str = "auto",
) -> CaptureResult:
    """Capture ``site`` activations at ``layers`` over ``corpus`` into a store at ``out``.

    Args:
        corpus: anything :func:`workbench.corpora.load_corpus` takes.
        site: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out`` or ``z``.
        positions: ``all`` (every real token but BOS), ``last`` (last real token of each
            document) or ``mean`` (mean over each document's real tokens but BOS).
        max_tokens: cut documents to this many tokens (BOS included; the model's context is
            always the upper bound). Truncations are counted in the manifest.
        dtype: ``float16`` or ``float32`` on disk.
        resume: continue an interrupted store (a no-op on a complete one).
        overwrite: replace an existing store.
        shard_rows: rows per shard file (bounds memory).
        progress: called with a :class:`CaptureProgress` after every batch.
        backend: ``auto`` (transformers twin when possible), ``hf`` or ``tl``.

    Example:
        >>> capture(load_model(), "builtin:general", [8], out="acts/l8")  # doctest: +SKIP
    """
    layer_list = _check_args(model, layers, site, positions, max_tokens, batch_size, dtype)
    check(shard_rows >= 1, f"shard_rows must be at least 1, got {shard_rows}")
    backend = _choose_backend(model, site, backend)
    docs = load_corpus(corpus)
    path = Path(out).expanduser()
    claim, old = claim_store(path, resume=resume, overwrite=overwrite)  # locked until returned
    with claim:
        plan = _plan(
            model, docs, layer_list, site, positions, dtype, backend, batch_size, max_tokens
        )
        manifest = _manifest(model, corpus, plan, max_tokens=max_tokens, shard_rows=shard_rows)
        if old is not None:
            writer = StoreWriter.resume(path, old, manifest)
        else:
            writer = StoreWriter.create(path, manifest, doc_records(model, docs, plan.first))
        if plan.truncated:
            log.info(
                "%d documents were longer than %d tokens; truncated",
                len(plan.truncated),
                plan.limit,
            )
        if writer.complete:
            return _result(writer.manifest, path, 0.0, resumed=True, already_complete=True)
        resumed = writer.rows_stored > 0
        elapsed = _run_batches(model, plan, writer, progress, progress_bar)
        return _result(writer.manifest, path, elapsed, resumed=resumed, already_complete=False)


# --------------------------------------------------------------------------- checks and plan


def _check_args(
    model: Model,
    layers: int | Sequence[int],
    site: str,
    positions: str,
    max_tokens: int | None,
    batch_size: int,
    dtype: str,
) -> list[int]:
    Site(site, 0)  # raises for an unknown site kind
    check(positions in ROW_POSITIONS, f"unknown positions '{positions}': use all, last or mean")
    check(dtype in DTYPES, f"unknown dtype '{dtype}': use float16 or float32")
    check(batch_size >= 1, f"batch size must be at least 1, got {batch_size}")
    check(
        max_tokens is None or max_tokens >= 2,
        f"max_tokens must be at least 2 (BOS plus one token), got {max_tokens}",
    )
    layer_list = sorted({int(x) for x in ([layers] if isinstance(layers, int) else layers)})
    check(bool(layer_list), f"give at least one layer (0..{model.n_layers - 1})")
    for layer in layer_list:
        model.check_layer(layer)
    return layer_list


def _choose_backend(model: Model, site: str, backend: str) -> str:
    check(backend in ("auto", "hf", "tl"), f"unknown backend '{backend}': use auto, hf or tl")
    if backend == "auto":
        return default_backend(model)
    return backend


def _norm_kind(site: str) -> str:
    return site if site in RESID_KINDS else "resid_post"


def _plan(
    model: Model,
    docs: list[str],
    layers: list[int],
    site: str,
    positions: str,
    dtype: str,
    backend: str,
    batch_size: int,
    max_tokens: int | None,
) -> _Plan:
    """Count each document's tokens after truncation to the model's context or ``max_tokens``."""
    limit = min(model.n_ctx, max_tokens) if max_tokens else model.n_ctx
    first = 1 if model.bos_token_id is not None else 0
    lengths = token_counts(model, docs, first, limit)  # per doc, BOS included, after truncation
    return _Plan(
        docs=docs,
        layers=layers,
        site=site,
        positions=positions,
        dtype=dtype,
        backend=backend,
        batch_size=batch_size,
        limit=limit,
        first=first,
        counts=[n for n, _ in lengths],
        truncated=[i for i, (n, full) in enumerate(lengths) if full > limit],
    )


def _corpus_source(corpus: str | os.PathLike[str] | Sequence[str], n: int) -> str:
    if isinstance(corpus, (str, os.PathLike)):
        return str(corpus)
    return f"Python list of {n} documents"


def _manifest(
    model: Model, corpus: Any, plan: _Plan, *, max_tokens: int | None, shard_rows: int
) -> dict[str, Any]:
    """The store's manifest before any shard: model, site, layers, corpus digest, truncation."""
    docs, site, limit, truncated = plan.docs, plan.site, plan.limit, plan.truncated
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.encode("utf-8") + b"\0")
    row_shape = [model.n_heads, model.d_head] if site == "z" else [model.d_model]
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model.name,
        "model_info": model.describe(),
        "site": site,
        "layers": plan.layers,
        "positions": plan.positions,
        "dtype": plan.dtype,
        "width": int(torch.tensor(row_shape).prod()),
        "row_shape": row_shape,
        "bos": bool(plan.first),
        "backend": plan.backend,
        "batch_size": plan.batch_size,
        "shard_rows": shard_rows,
        "max_tokens": max_tokens,
        "corpus": {"source": _corpus_source(corpus, len(docs)), "n_docs": len(docs)},
        "corpus_sha256": digest.hexdigest(),
        "n_docs": len(docs),
        "truncation": {
            "limit": limit,
            "n_truncated": len(truncated),
            "action": f"kept the first {limit} tokens (BOS included) of longer documents",
            "docs": truncated[:50],
        },
        "norm_site": _norm_kind(site),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- forward pass


def _run_batches(
    model: Model,
    plan: _Plan,
    writer: StoreWriter,
    progress: Callable[[CaptureProgress], None] | None,
    progress_bar: bool,
) -> float:
    """Run every batch through the model (skipping those already stored), finish the store,
    and return the seconds spent."""
    start = time.perf_counter()
    tokens_total = plan.real_tokens(plan.counts)
    bar = tqdm(
        total=tokens_total,
        unit="tok",
        unit_scale=True,
        desc="capture",
        file=sys.stderr,
        disable=not progress_bar,
        dynamic_ncols=True,
    )
    docs_done = tokens_done = tokens_run = 0
    sites = plan.kind_sites + plan.norm_sites
    try:
        with (
            torch.inference_mode(),
            recording(model, sites, backend=plan.backend, stop=True) as rec,
        ):
            for batch in batches(plan.counts, plan.batch_size):
                ran = _capture_batch(model, plan, batch, rec, writer)
                batch_tokens = plan.real_tokens([plan.counts[i] for i in batch])
                tokens_run += batch_tokens if ran else 0
                docs_done += len(batch)
                tokens_done += batch_tokens
                bar.update(batch_tokens)
                if progress is not None:
                    progress(
                        CaptureProgress(
                            docs_done=docs_done,
                            n_docs=len(plan.docs),
                            tokens_done=tokens_done,
                            tokens_total=tokens_total,
                            tokens_run=tokens_run,
                            rows=writer.rows_stored,
                            shards=len(writer.manifest["shards"]),
                            elapsed_s=time.perf_counter() - start,
                        )
                    )
            elapsed = time.perf_counter() - start
            writer.manifest["tokens_per_s"] = round(tokens_run / max(elapsed, 1e-9), 1)
            writer.finish()
    finally:
        bar.close()
    return elapsed


def _capture_batch(
    model: Model,
    plan: _Plan,
    batch: list[int],
    rec: dict[Site, torch.Tensor],
    writer: StoreWriter,
) -> bool:
    """Store the rows of the documents ``batch``, or skip them when an interrupted run already
    stored them; return whether the model ran."""
    lens = [plan.counts[i] for i in batch]
    n_rows = row_count(lens, plan.first, plan.positions)
    if n_rows <= writer.skip:  # already in shards from an interrupted run
        writer.skip_rows(n_rows)
        return False
    writer.add(batch_rows(model, plan, batch, rec))
    return True


def batch_rows(
    model: Model, plan: _Plan, batch: list[int], rec: dict[Site, torch.Tensor]
) -> RowBatch:
    """Run the documents ``batch`` through the model (inside :func:`recording` of the plan's
    sites) and return their rows, in capture order."""
    ids, mask, _ = model.encode(
        [plan.docs[i] for i in batch], max_tokens=plan.limit
    )  # (batch, pos)
    if mask.sum(1).tolist() != [plan.counts[i] for i in batch]:  # resume relies on these counts
        raise RuntimeError("batch tokenisation disagrees with the token counts")
    _forward(model, plan.backend, ids, mask)
    rows = select_rows(
        ids,
        mask,
        torch.tensor(batch),
        plan.first,
        plan.positions,
        DTYPES[plan.dtype],
        [rec[s].cpu() for s in plan.kind_sites],
        [rec[s].cpu() for s in plan.norm_sites],
        plan.layers,
    )
    rec.clear()
    return rows


def _forward(model: Model, backend: str, ids: torch.Tensor, mask: torch.Tensor) -> None:
    ids, mask = ids.to(model.device), mask.to(model.device)
    try:
        if backend == "hf" and model.hf is not None:
            model.hf(input_ids=ids, attention_mask=mask, use_cache=False)
        else:
            model.tl(ids, attention_mask=mask)
    except StopForward:
        return
    raise RuntimeError("the forward pass finished without reaching the deepest capture site")


def _result(
    manifest: dict[str, Any], path: Path, elapsed: float, *, resumed: bool, already_complete: bool
) -> CaptureResult:
    return CaptureResult(
        path=path,
        model=str(manifest["model"]),
        site=str(manifest["site"]),
        layers=[int(x) for x in manifest["layers"]],
        positions=str(manifest["positions"]),
        dtype=str(manifest["dtype"]),
        d_model=int(manifest["width"]),
        tokens=int(manifest["tokens"]),
        rows=int(manifest["n_rows"]),
        docs=int(manifest["n_docs"]),
        shards=len(manifest["shards"]),
        tokens_per_s=float(manifest.get("tokens_per_s", 0.0)),
        elapsed_s=round(elapsed, 3),
        truncated=int(manifest["truncation"]["n_truncated"]),
        truncation_limit=int(manifest["truncation"]["limit"]),
        resumed=resumed,
        already_complete=already_complete,
    )
