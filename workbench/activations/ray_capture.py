"""Capture on a Ray cluster: the corpus split across actors, one store, the same rows.

The driver plans the capture exactly as :func:`workbench.activations.capture.capture` does (the
same batches in the same order, so every row lands where the single-process capture puts it)
and cuts the store's shards into ranges. Each Ray actor loads the model once (a GPU each when the
cluster has GPUs) and, per range, runs the batches that cover its rows and writes its shards
(``shard-<index>.safetensors``, atomically) straight into the store. Only the driver holds the
store's claim and writes its manifest, listing shards in row order as soon as every range before
them is done, so an interrupted run leaves a store that ``--resume`` continues, with or without
Ray.

Retries: a shard's name and contents follow from its index alone, so a range rerun after a
worker died (Ray restarts the actor and retries the call) replaces its shards, never doubles
them. The store folder must be on storage every node sees (one machine, or a shared filesystem).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.activations.batches import batches, doc_records, row_count
from workbench.activations.capture import (
    CaptureResult,
    _check_args,
    _choose_backend,
    _manifest,
    _Plan,
    _plan,
    _result,
    batch_rows,
)
from workbench.activations.ray_session import connect, worker_count, worker_resources
from workbench.activations.writer import RowBatch, StoreWriter, claim_store, write_shard
from workbench.corpora import load_corpus
from workbench.errors import WorkbenchError, check
from workbench.io import remove
from workbench.model.hooks import recording
from workbench.model.load import Model, load_model

RANGES_PER_WORKER = 4  # ranges per actor: enough to balance uneven ranges, few boundary reruns
MAX_RETRIES = 3  # actor restarts and call retries after a worker dies


@dataclass(frozen=True)
class Range:
    """Shards ``first .. first + count - 1``: rows ``rows[0]:rows[1]``, made by the batches
    ``batches`` (document indices, capture order) whose first rows are ``starts``."""

    first: int
    count: int
    rows: tuple[int, int]
    batches: list[list[int]]
    starts: list[int]


def plan_ranges(plan: _Plan, shard_rows: int, done_shards: int, n_ranges: int) -> list[Range]:
    """The shards from ``done_shards`` on, cut into about ``n_ranges`` ranges of whole shards."""
    all_batches = list(batches(plan.counts, plan.batch_size))
    starts, total = [], 0
    for b in all_batches:
        starts.append(total)
        total += row_count([plan.counts[i] for i in b], plan.first, plan.positions)
    n_shards = math.ceil(total / shard_rows)
    todo = n_shards - done_shards
    if todo <= 0:
        return []
    per = math.ceil(todo / max(1, n_ranges))
    out = []
    for first in range(done_shards, n_shards, per):
        count = min(per, n_shards - first)
        lo, hi = first * shard_rows, min((first + count) * shard_rows, total)
        pick = [
            j
            for j, b in enumerate(all_batches)
            if starts[j] < hi
            and starts[j] + row_count([plan.counts[i] for i in b], plan.first, plan.positions) > lo
        ]
        out.append(
            Range(first, count, (lo, hi), [all_batches[j] for j in pick], [starts[j] for j in pick])
        )
    return out


class CaptureWorker:
    """One Ray actor: the model loaded once, then any number of ranges captured into the store.

    ``on_shard(index)`` runs in the worker after each shard it writes (tests use it to kill a
    worker halfway through a range).
    """

    def __init__(
        self,
        model_name: str,
        model_dtype: str,
        device: str,
        plan: _Plan,
        path: str,
        shard_rows: int,
        on_shard: Callable[[int], None] | None = None,
    ) -> None:
        self.model = load_model(model_name, dtype=model_dtype, device=device)
        self.plan = plan
        self.path = Path(path)
        self.shard_rows = shard_rows
        self.on_shard = on_shard

    def run(self, job: Range) -> list[dict[str, Any]]:
        """Capture ``job``'s rows and write its shards; return their manifest entries."""
        plan, (lo, hi) = self.plan, job.rows
        entries: list[dict[str, Any]] = []
        buffer: list[RowBatch] = []
        sites = plan.kind_sites + plan.norm_sites
        with (
            torch.inference_mode(),
            recording(self.model, sites, backend=plan.backend, stop=True) as rec,
        ):
            for batch, start in zip(job.batches, job.starts, strict=True):
                rows = batch_rows(self.model, plan, batch, rec)
                buffer.append(rows.slice(max(0, lo - start), max(0, hi - start)))
                while sum(len(b) for b in buffer) >= self.shard_rows:
                    buffer = self._write(job.first + len(entries), buffer, entries)
            if buffer and sum(len(b) for b in buffer):  # the store's last, partial shard
                self._write(job.first + len(entries), buffer, entries)
        if len(entries) != job.count or sum(int(e["rows"]) for e in entries) != hi - lo:
            raise RuntimeError(f"shards {job.first}..: the range's batches gave the wrong rows")
        return entries

    def _write(
        self, index: int, buffer: list[RowBatch], entries: list[dict[str, Any]]
    ) -> list[RowBatch]:
        """Write shard ``index`` from the front of ``buffer``; return what is left over."""
        merged = RowBatch.cat(buffer)
        rows = min(self.shard_rows, len(merged))
        entries.append(
            write_shard(self.path, index, index * self.shard_rows, merged.slice(0, rows))
        )
        if self.on_shard is not None:
            self.on_shard(index)
        rest = merged.slice(rows)
        return [rest] if len(rest) else []


def capture_ray(
    model: Model,
    corpus: str | os.PathLike[str] | Sequence[str],
    layers: int | Sequence[int],
    *,
    out: str | os.PathLike[str],
    address: str | None = None,
    workers: int | None = None,
    site: str = "resid_pre",
    positions: str = "all",
    max_tokens: int | None = None,
    batch_size: int = 16,
    dtype: str = "float16",
    resume: bool = False,
    overwrite: bool = False,
    shard_rows: int = 16384,
    backend: str = "auto",
    on_shard: Callable[[int], None] | None = None,
) -> CaptureResult:
    """:func:`~workbench.activations.capture.capture` on Ray actors: the same store, row for row.

    ``model`` is the driver's copy (it tokenises and describes); each actor loads its own by
    ``model.name``. ``address``: see :func:`workbench.activations.ray_session.connect`.
    ``workers``: actors to start (default: one per GPU, else one per CPU of the cluster).

    Example:
        >>> capture_ray(load_model(), "builtin:general", [8], out="acts/l8", address="auto")  # doctest: +SKIP
    """
    layer_list = _check_args(model, layers, site, positions, max_tokens, batch_size, dtype)
    check(shard_rows >= 1, f"shard_rows must be at least 1, got {shard_rows}")
    check(workers is None or workers >= 1, f"workers must be at least 1, got {workers}")
    ray = connect(address)
    backend = _choose_backend(model, site, backend)
    docs = load_corpus(corpus)
    path = Path(out).expanduser().resolve()
    claim, old = claim_store(path, resume=resume, overwrite=overwrite)
    with claim:
        plan = _plan(
            model, docs, layer_list, site, positions, dtype, backend, batch_size, max_tokens
        )
        manifest = _manifest(model, corpus, plan, max_tokens=max_tokens, shard_rows=shard_rows)
        if old is not None:
            writer = StoreWriter.resume(path, old, manifest)
        else:
            writer = StoreWriter.create(path, manifest, doc_records(model, docs, plan.first))
        if writer.complete:
            return _result(writer.manifest, path, 0.0, resumed=True, already_complete=True)
        resumed = writer.rows_stored > 0
        start = time.perf_counter()
        _run_ranges(ray, model, plan, writer, workers, on_shard)
        elapsed = time.perf_counter() - start
        tokens = sum(int(s["tokens"]) for s in writer.manifest["shards"])
        writer.manifest["tokens_per_s"] = round(tokens / max(elapsed, 1e-9), 1)
        writer.finish()
        _remove_temp_files(path)
        return _result(writer.manifest, path, elapsed, resumed=resumed, already_complete=False)


def _run_ranges(
    ray: Any,
    model: Model,
    plan: _Plan,
    writer: StoreWriter,
    workers: int | None,
    on_shard: Callable[[int], None] | None,
) -> None:
    """Run every remaining range on a pool of actors; commit shards in row order."""
    shard_rows = int(writer.manifest["shard_rows"])
    done = len(writer.manifest["shards"])
    n_workers = worker_count(ray, workers)
    ranges = plan_ranges(plan, shard_rows, done, n_workers * RANGES_PER_WORKER)
    if not ranges:
        return
    options, device = worker_resources(ray)
    actor_cls = ray.remote(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES, **options)(
        CaptureWorker
    )
    plan_ref = ray.put(plan)
    dtype = str(model.info.get("dtype", "float32"))
    actors = [
        actor_cls.remote(
            model.name, dtype, device, plan_ref, str(writer.path), shard_rows, on_shard
        )
        for _ in range(min(n_workers, len(ranges)))
    ]
    pool = ray.util.ActorPool(actors)
    finished: dict[int, list[dict[str, Any]]] = {}
    try:
        for entries in pool.map_unordered(lambda a, job: a.run.remote(job), ranges):
            finished[int(entries[0]["first_row"]) // shard_rows] = entries
            while done in finished:  # commit the contiguous prefix only
                batch = finished.pop(done)
                writer.commit(batch)
                done += len(batch)
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, WorkbenchError):
            raise cause from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkbenchError(
            f"a Ray capture worker failed after {MAX_RETRIES} retries ({first}); completed "
            "shards are kept: rerun with --resume"
        ) from None
    finally:
        for actor in actors:
            ray.kill(actor)


def _remove_temp_files(path: Path) -> None:
    # Workers killed while writing a shard leave its temporary folder behind.
    for p in path.iterdir():
        if p.name.startswith(".shard-") and p.name.endswith(".tmp"):
            remove(p)
