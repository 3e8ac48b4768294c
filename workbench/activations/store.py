"""The activation store: a folder of safetensors shards plus a JSON manifest, and its reader.

Layout of a store folder (written by :mod:`workbench.activations.capture` through
:mod:`workbench.activations.writer`)::

    manifest.json             what was captured and how; rewritten atomically after every shard
    docs.jsonl                the corpus: one {"doc", "text", "n_tokens", "offsets"} per document
    shard-00000.safetensors   layer_<L> (rows, width) per layer + doc, pos, token (rows,) int64
    shard-00001.safetensors   ...

Rows. ``positions="all"``: one row per real token, BOS and padding excluded. ``"last"``: one row
per document, its last real token. ``"mean"``: one row per document, the mean over its real
tokens except BOS, with ``pos = token = -1``. Row ``r`` of every ``layer_<L>`` tensor is the same
token; ``doc`` (index into the corpus and ``docs.jsonl``), ``pos`` (index in the model's token
sequence, BOS included: pos 0 is BOS when the model has one) and ``token`` (token id) trace it to
its text. Rows come in capture order (documents sorted by length within chunks to save padding),
so look rows up by ``doc``, never by row order.

Site ``z`` (attention head outputs before W_O) is stored flattened, ``(rows, n_heads * d_head)``,
head-major: columns ``h*d_head:(h+1)*d_head`` are head ``h``. ``store.row_shape`` is
``(n_heads, d_head)`` then, and ``store.load(L).view(-1, *store.row_shape)`` gives per-head rows.

Norms. ``mean_norm(L)`` is the mean L2 norm of the residual stream at layer ``L`` over every real
token (BOS excluded): at the site itself for residual sites, at ``resid_post`` for ``z``,
``attn_out`` and ``mlp_out``. Later steps express steering coefficients in these units.
``row_norm(L)`` is the mean L2 norm of the stored rows themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from workbench.errors import WorkbenchError
from workbench.io import read_json

FORMAT = "workbench-activations"
VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.jsonl"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
_NP_DTYPES = {"F16": np.float16, "F32": np.float32, "I64": np.int64}


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.safetensors``."""
    return f"shard-{index:05d}.safetensors"


def layer_key(layer: int) -> str:
    """Tensor name of a layer inside a shard: ``layer_8``."""
    return f"layer_{layer}"


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding an activation-store manifest."""
    return (Path(path) / MANIFEST).is_file()


class RowMeta(NamedTuple):
    """Where each row came from; three ``(rows,)`` int64 tensors."""

    doc: torch.Tensor
    pos: torch.Tensor
    token: torch.Tensor


@dataclass
class MemmapLayer:
    """A read-only, memory-mapped view of one layer across every shard of a store.

    ``shards`` are the per-shard ``numpy.memmap`` arrays (zero copy). Indexing with an int, a
    slice or an array of row indices returns a new ``torch.Tensor`` holding only those rows.
    """

    shards: list[np.ndarray]
    starts: np.ndarray  # (n_shards + 1,) first row of each shard, then n_rows

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.starts[-1]), int(self.shards[0].shape[1]) if self.shards else 0

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> torch.Tensor:
        n = len(self)
        if isinstance(index, slice):
            rows = np.arange(n)[index]
        elif isinstance(index, (int, np.integer)):
            if not -n <= int(index) < n:
                raise IndexError(f"row {index} is out of range for {n} rows")
            return self[[int(index) % n]][0]
        else:
            rows = np.asarray(index, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row indices must lie in 0..{n - 1}")
        which = np.searchsorted(self.starts, rows, side="right") - 1  # (k,) shard of each row
        out = np.empty((rows.size, self.shape[1]), dtype=self.shards[0].dtype)
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.shards[s][rows[sel] - self.starts[s]]
        return torch.from_numpy(out)


class ActivationStore:
    """Read an activation store written by :func:`workbench.activations.capture.capture`.

    Example:
        >>> store = ActivationStore.open("acts/general-l8")  # doctest: +SKIP
        >>> x = store.load(8)                                 # (rows, 576) float32
        >>> for batch in store.iter_batches(8, 4096): ...     # streamed shard by shard
        >>> store.context(123)                                # ('...the cat', ' sat', ' on...')
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._meta: RowMeta | None = None
        self._docs: list[dict[str, Any]] | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, allow_incomplete: bool = False
    ) -> ActivationStore:
        """Open the store at ``path``.

        An interrupted capture leaves an incomplete store whose completed shards are readable
        with ``allow_incomplete=True``; by default opening one is an error that says to resume.
        """
        p = Path(path)
        if not p.is_dir():
            raise WorkbenchError(
                f"no activation store at {p} (folder not found); create one with "
                f"`workbench capture --out {p}`"
            )
        if not is_store(p):
            raise WorkbenchError(
                f"{p} is not an activation store (no {MANIFEST}); create one with "
                f"`workbench capture --out {p}`"
            )
        manifest = read_json(p / MANIFEST, "store manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise WorkbenchError(
                f"{p / MANIFEST} is not an activation-store manifest; recapture with --overwrite"
            )
        if not manifest.get("complete") and not allow_incomplete:
            raise WorkbenchError(
                f"activation store {p} is incomplete ({manifest.get('n_rows', 0)} rows in "
                f"{len(manifest.get('shards', []))} shards); finish it by rerunning "
                "`workbench capture` with --resume, or open it with allow_incomplete=True"
            )
        return cls(p, manifest)

    # ----------------------------------------------------------------- description

    @property
    def layers(self) -> list[int]:
        return [int(x) for x in self.manifest["layers"]]

    @property
    def d_model(self) -> int:
        """Width of a row: ``d_model``, or ``n_heads * d_head`` for site ``z``."""
        return int(self.manifest["width"])

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row before flattening: ``(d_model,)`` or ``(n_heads, d_head)``."""
        return tuple(int(x) for x in self.manifest["row_shape"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def site(self) -> str:
        return str(self.manifest["site"])

    @property
    def positions(self) -> str:
        return str(self.manifest["positions"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["dtype"]]

    def mean_norm(self, layer: int) -> float:
        """Mean L2 norm of the residual stream at ``layer`` over all real tokens (see module)."""
        return float(self.manifest["resid_norms"][str(self.check_layer(layer))])

    def row_norm(self, layer: int) -> float:
        """Mean L2 norm of the stored rows of ``layer``."""
        return float(self.manifest["mean_norms"][str(self.check_layer(layer))])

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` if the store holds it, else raise an error listing those it has."""
        if layer not in self.layers:
            have = ", ".join(str(x) for x in self.layers)
            raise WorkbenchError(
                f"layer {layer} is not in the store at {self.path}: it has layers {have}; "
                "capture that layer into a new store"
            )
        return layer

    # ----------------------------------------------------------------- reading rows

    def _shards(self) -> list[tuple[Path, int]]:
        return [(self.path / s["file"], int(s["rows"])) for s in self.manifest["shards"]]

    def _read(self, file: Path, rows: int, key: str) -> torch.Tensor:
        try:
            with safe_open(str(file), framework="pt") as f:
                t: torch.Tensor = f.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise WorkbenchError(
                f"shard {file} of store {self.path} is missing, corrupt or truncated ({e}); "
                "recapture the store with --overwrite"
            ) from e
        if t.shape[0] != rows:
            raise WorkbenchError(
                f"shard {file} holds {t.shape[0]} rows of {key} but the manifest says {rows}; "
                "the store is corrupt: recapture it with --overwrite"
            )
        return t

    def iter_batches(
        self, layer: int, batch_size: int = 4096, dtype: torch.dtype = torch.float32
    ) -> Iterator[torch.Tensor]:
        """Yield ``(batch_size, width)`` tensors covering every row once, in row order.

        Reads one shard at a time, so memory stays at one shard plus one batch; only the final
        batch may be shorter.
        """
        self.check_layer(layer)
        if batch_size < 1:
            raise WorkbenchError(f"batch_size must be at least 1, got {batch_size}")
        carry: torch.Tensor | None = None
        for file, rows in self._shards():
            block = self._read(file, rows, layer_key(layer)).to(dtype)  # (rows, width)
            if carry is not None:
                block = torch.cat([carry, block])
                carry = None
            full = (block.shape[0] // batch_size) * batch_size
            for start in range(0, full, batch_size):
                yield block[start : start + batch_size]
            if full < block.shape[0]:
                carry = block[full:].clone()
        if carry is not None:
            yield carry

    def load(self, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All rows of ``layer`` as one ``(rows, width)`` tensor."""
        self.check_layer(layer)
        out = torch.empty((self.n_rows, self.d_model), dtype=dtype)
        start = 0
        for file, rows in self._shards():
            out[start : start + rows] = self._read(file, rows, layer_key(layer))
            start += rows
        return out

    def memmap(self, layer: int) -> MemmapLayer:
        """A memory-mapped, read-only view of ``layer`` (no rows are read until indexed)."""
        key = layer_key(self.check_layer(layer))
        shards: list[np.ndarray] = []
        starts = [0]
        for file, rows in self._shards():
            shards.append(self._memmap_tensor(file, rows, key))
            starts.append(starts[-1] + rows)
        return MemmapLayer(shards=shards, starts=np.asarray(starts, dtype=np.int64))

    def _memmap_tensor(self, file: Path, rows: int, key: str) -> np.ndarray:
        # A safetensors file is: u64 header length, JSON header, then raw little-endian data.
        try:
            with file.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            entry = header[key]
            begin, end = entry["data_offsets"]
            arr = np.memmap(
                file,
                dtype=_NP_DTYPES[entry["dtype"]],
                mode="r",
                offset=8 + n + begin,
                shape=tuple(entry["shape"]),
            )
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
            raise WorkbenchError(
                f"shard {file} of store {self.path} is missing, corrupt or truncated ({e}); "
                "recapture the store with --overwrite"
            ) from e
        if arr.shape[0] != rows or arr.nbytes != end - begin:
            raise WorkbenchError(
                f"shard {file} does not match the manifest; recapture the store with --overwrite"
            )
        return arr

    def sample_rows(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` distinct row indices drawn uniformly with ``seed``, sorted ascending."""
        if not 1 <= n <= self.n_rows:
            raise WorkbenchError(
                f"cannot sample {n} rows from the store at {self.path}, which has {self.n_rows}; "
                f"ask for 1..{self.n_rows}"
            )
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(self.n_rows, generator=g)[:n].sort().values

    def sample(
        self, layer: int, n: int, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``n`` random rows of ``layer``, ``(n, width)``: the rows of :meth:`sample_rows`."""
        rows = self.sample_rows(n, seed).numpy()
        return self.memmap(layer)[rows].to(dtype)

    # ----------------------------------------------------------------- tracing rows to text

    def rows_meta(self) -> RowMeta:
        """``(doc, pos, token)`` of every row, each ``(rows,)`` int64."""
        if self._meta is None:
            parts: dict[str, list[torch.Tensor]] = {"doc": [], "pos": [], "token": []}
            for file, rows in self._shards():
                for key, acc in parts.items():
                    acc.append(self._read(file, rows, key))
            empty = torch.zeros(0, dtype=torch.int64)
            self._meta = RowMeta(
                *(torch.cat(parts[k]) if parts[k] else empty for k in ("doc", "pos", "token"))
            )
        return self._meta

    def docs(self) -> list[dict[str, Any]]:
        """The corpus records of ``docs.jsonl`` (``text``, ``n_tokens``, token ``offsets``)."""
        if self._docs is None:
            path = self.path / DOCS
            if not path.is_file():
                raise WorkbenchError(
                    f"store {self.path} has no {DOCS}; recapture it with --overwrite"
                )
            with path.open(encoding="utf-8") as f:
                self._docs = [json.loads(line) for line in f if line.strip()]
        return self._docs

    def context(self, row: int, window: int = 10) -> tuple[str, str, str]:
        """``(left_text, token_text, right_text)`` around ``row``, ``window`` tokens each side.

        For ``positions="mean"`` rows the "token" is the whole captured document.
        """
        if not 0 <= row < self.n_rows:
            raise WorkbenchError(f"row {row} is out of range: the store has {self.n_rows} rows")
        meta = self.rows_meta()
        record = self.docs()[int(meta.doc[row])]
        text: str = record["text"]
        offsets: list[list[int]] = record["offsets"]
        pos = int(meta.pos[row])
        if pos < 0:
            limit = int(self.manifest["truncation"]["limit"]) - int(self.manifest["bos"])
            end = offsets[min(limit, len(offsets)) - 1][1] if offsets else len(text)
            return "", text[:end], ""
        i = pos - int(self.manifest["bos"])  # index into offsets (which exclude BOS)
        lo = max(0, i - window)
        hi = min(len(offsets) - 1, i + window)
        start, end = offsets[i]
        return text[offsets[lo][0] : start], text[start:end], text[end : offsets[hi][1]]
