"""Writing an activation store: crash-safe shards, a manifest kept current, and resume.

The layout is described in :mod:`workbench.activations.store`. Every shard is written atomically and the
manifest is rewritten atomically after it, so a capture that is interrupted (Ctrl-C) or killed
leaves a store whose listed shards are all complete. Rows are buffered until a shard is full;
rows still in the buffer at an interruption are simply captured again on resume, which skips the
rows already in shards, so a resumed store is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from workbench.activations.store import DOCS, FORMAT, MANIFEST, is_store, layer_key, shard_name
from workbench.errors import WorkbenchError, check
from workbench.io import atomic_path, read_json, remove, save_tensors, write_json
from workbench.outputs import Output, check_output, claim_output, marker_kind, write_marker

STORE_KIND = "activations"  # the kind in a store folder's workbench marker

# Settings that must match for --resume to produce the same store as one uninterrupted run.
RESUME_KEYS = (
    "model_info",
    "site",
    "layers",
    "positions",
    "dtype",
    "max_tokens",
    "batch_size",
    "shard_rows",
    "backend",
)
_OWN_FILE = re.compile(
    r"(manifest\.json|docs\.jsonl|shard-\d{5}\.safetensors|\.workbench|\..*\.tmp|\..*\.old)"
)


@dataclass
class RowBatch:
    """Rows ready to store, plus the per-row sums that the manifest's norms are built from.

    Attributes:
        acts: layer -> ``(n, width)`` rows, already in the store dtype.
        doc, pos, token: ``(n,)`` int64 provenance of each row.
        row_norm: ``(n, n_layers)`` float64 L2 norm of each row (before the dtype cast).
        resid_sum: ``(n, n_layers)`` float64 summed residual-stream norms attributed to the row
            (the row's own token for positions="all", its whole document otherwise).
        resid_count: ``(n,)`` int64 number of tokens summed in ``resid_sum``.
    """

    acts: dict[int, torch.Tensor]
    doc: torch.Tensor
    pos: torch.Tensor
    token: torch.Tensor
    row_norm: torch.Tensor
    resid_sum: torch.Tensor
    resid_count: torch.Tensor

    def __len__(self) -> int:
        return int(self.doc.shape[0])

    def slice(self, start: int, stop: int | None = None) -> RowBatch:
        """Rows ``start:stop`` (copies, so the source batch can be freed)."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name)[start:stop].clone()
            for f in fields(self)
            if f.name != "acts"
        }
        return RowBatch(acts={k: v[start:stop].clone() for k, v in self.acts.items()}, **out)

    @staticmethod
    def cat(parts: list[RowBatch]) -> RowBatch:
        out: dict[str, Any] = {
            f.name: torch.cat([getattr(p, f.name) for p in parts])
            for f in fields(RowBatch)
            if f.name != "acts"
        }
        acts = {k: torch.cat([p.acts[k] for p in parts]) for k in parts[0].acts}
        return RowBatch(acts=acts, **out)


def check_destination(path: Path, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Decide what to do with ``path`` before anything is written (without locking it).

    Returns the existing manifest when resuming a store, ``None`` for a fresh start; raises a
    :class:`WorkbenchError` for a store that would be silently overwritten, or anything the
    output policy of :mod:`workbench.outputs` refuses (a file, a foreign folder, ...).
    """
    check(not (resume and overwrite), "choose one of --resume and --overwrite, not both")
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"--out {path} is a file; give a folder for the activation store")
    if is_store(path) and not (resume or overwrite):
        old = read_json(path / MANIFEST, "store manifest")
        state = "a complete" if isinstance(old, dict) and old.get("complete") else "an incomplete"
        raise WorkbenchError(
            f"{path} already holds {state} activation store; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    check_output(
        path,
        kind=STORE_KIND,
        overwrite=overwrite,
        resume=resume,
        legacy=_made_before_markers,
        resumable=True,
    )
    if not is_store(path) or overwrite:  # overwrite: a corrupt store must stay replaceable
        return None
    old = read_json(path / MANIFEST, "store manifest")
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise WorkbenchError(
            f"{path / MANIFEST} is not an activation-store manifest; use --overwrite"
        )
    return dict(old)


def claim_store(
    path: Path, *, resume: bool, overwrite: bool
) -> tuple[Output, dict[str, Any] | None]:
    """Check ``path`` (:func:`check_destination`) and lock it against other writers.

    Returns the claim (release it, or use it as a context manager, when the capture ends) and
    the manifest to resume from, if any. A second writer is refused at once, naming the first.
    """
    check_destination(path, resume=resume, overwrite=overwrite)
    claim = claim_output(
        path,
        kind=STORE_KIND,
        overwrite=overwrite,
        resume=resume,
        legacy=_made_before_markers,
        resumable=True,
    )
    try:  # again under the lock: the folder may have changed while we waited for nothing
        old = check_destination(path, resume=resume, overwrite=overwrite)
    except BaseException:
        claim.release()
        raise
    return claim, old


def _made_before_markers(path: Path) -> bool:
    # Stores written before folders carried the marker, and folders holding only store files.
    return is_store(path) or all(_OWN_FILE.fullmatch(p.name) for p in path.iterdir())


def _remove_store_files(path: Path) -> None:
    # Only the files a store consists of; the manifest last, so a crash midway still leaves a
    # folder recognised (and replaceable) as a store.
    for p in sorted(path.iterdir(), key=lambda p: p.name == MANIFEST):
        if _OWN_FILE.fullmatch(p.name):
            remove(p)


def write_shard(path: Path, index: int, first_row: int, shard: RowBatch) -> dict[str, Any]:
    """Write ``shard`` atomically as shard ``index`` of the store at ``path`` and return its
    manifest entry. Writing the same rows again replaces the file, so a retry never doubles."""
    layers = sorted(shard.acts)
    tensors = {layer_key(layer): shard.acts[layer] for layer in layers}
    tensors.update(doc=shard.doc, pos=shard.pos, token=shard.token)
    meta = {"format": FORMAT, "index": index, "first_row": first_row, "rows": len(shard)}
    save_tensors(path / shard_name(index), tensors, meta)
    norm_sums = shard.row_norm.sum(0).tolist()  # (n_layers,) in the order of the sorted layers
    resid_sums = shard.resid_sum.sum(0).tolist()
    return {
        "file": shard_name(index),
        "rows": len(shard),
        "first_row": first_row,
        "tokens": int(shard.resid_count.sum()),
        "norm_sums": {str(k): norm_sums[i] for i, k in enumerate(layers)},
        "resid_sums": {str(k): resid_sums[i] for i, k in enumerate(layers)},
    }


class StoreWriter:
    """Appends rows to a store, one atomic shard at a time (see module docstring)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.layers = [int(x) for x in manifest["layers"]]
        self.skip = int(manifest["n_rows"])  # rows already stored: drop them when re-offered
        self._buffer: list[RowBatch] = []
        self._buffered = 0
        self._started = time.perf_counter()
        self._elapsed_before = float(manifest.get("elapsed_s", 0.0))

    @classmethod
    def create(
        cls, path: Path, manifest: dict[str, Any], docs: Iterable[dict[str, Any]]
    ) -> StoreWriter:
        """Start a fresh store at ``path`` (replacing an old store there), writing ``docs.jsonl``
        and an empty manifest."""
        if path.is_dir():
            _remove_store_files(path)
        path.mkdir(parents=True, exist_ok=True)
        write_marker(path, STORE_KIND)
        with atomic_path(path / DOCS) as tmp, tmp.open("w", encoding="utf-8") as f:
            for record in docs:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        manifest = {**manifest, "shards": [], "n_rows": 0, "tokens": 0, "complete": False}
        writer = cls(path, manifest)
        writer._write_manifest()
        return writer

    @classmethod
    def resume(cls, path: Path, old: dict[str, Any], manifest: dict[str, Any]) -> StoreWriter:
        """Continue the store at ``path`` whose manifest is ``old``; ``manifest`` holds the new
        run's settings, which must match the old ones."""
        for key in (*RESUME_KEYS, "corpus_sha256"):
            if old.get(key) != manifest.get(key):
                raise WorkbenchError(
                    f"cannot resume {path}: it was captured with {key}={old.get(key)!r}, this run "
                    f"asks for {manifest.get(key)!r}; rerun with the same options or --overwrite"
                )
        for p in path.iterdir():  # temporary files left by a killed run
            if p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
                remove(p)
        if marker_kind(path) is None:  # a store from before markers gets one
            write_marker(path, STORE_KIND)
        return cls(path, old)

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def rows_stored(self) -> int:
        return int(self.manifest["n_rows"])

    def skip_rows(self, n: int) -> None:
        """Account for ``n`` offered rows that are already stored, without their data."""
        if n > self.skip:
            raise ValueError(f"cannot skip {n} rows; only {self.skip} are stored")
        self.skip -= n

    def add(self, batch: RowBatch) -> int:
        """Buffer ``batch`` (minus rows already stored); write full shards. Returns shards written."""
        if self.skip:
            drop = min(self.skip, len(batch))
            self.skip -= drop
            batch = batch.slice(drop)
        if len(batch):
            self._buffer.append(batch)
            self._buffered += len(batch)
        written = 0
        limit = int(self.manifest["shard_rows"])
        while self._buffered >= limit:
            self._flush(limit)
            written += 1
        return written

    def finish(self) -> None:
        """Write the last, partial shard and mark the store complete."""
        if self._buffered:
            self._flush(self._buffered)
        self.manifest["complete"] = True
        self._write_manifest()

    def _flush(self, rows: int) -> None:
        merged = RowBatch.cat(self._buffer)
        shard, rest = merged.slice(0, rows), merged.slice(rows)
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        entry = write_shard(self.path, len(self.manifest["shards"]), self.rows_stored, shard)
        self.commit([entry])

    def commit(self, entries: list[dict[str, Any]]) -> None:
        """List shards already on disk (from :func:`write_shard`), in row order, and rewrite the
        manifest atomically: what a driver does with the shards its workers wrote."""
        for entry in entries:
            if int(entry["first_row"]) != self.rows_stored:
                raise ValueError(
                    f"shard {entry['file']} starts at row {entry['first_row']}, "
                    f"the store holds {self.rows_stored}"
                )
            self.manifest["shards"].append(entry)
            self.manifest["n_rows"] = self.rows_stored + int(entry["rows"])
        self._write_manifest()

    def _write_manifest(self) -> None:
        shards = self.manifest["shards"]
        n_rows = sum(int(s["rows"]) for s in shards)
        tokens = sum(int(s["tokens"]) for s in shards)
        elapsed = self._elapsed_before + time.perf_counter() - self._started

        def mean(key: str, count: int) -> dict[str, float | None]:
            total = {str(k): sum(s[key][str(k)] for s in shards) for k in self.layers}
            return {k: (v / count if count else None) for k, v in total.items()}

        self.manifest.update(
            n_rows=n_rows,
            tokens=tokens,
            mean_norms=mean("norm_sums", n_rows),
            resid_norms=mean("resid_sums", tokens),
            updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            elapsed_s=round(elapsed, 3),
        )
        write_json(self.path / MANIFEST, self.manifest)
