"""Atomic, pickle-free persistence: JSON metadata plus safetensors.

Everything the workbench saves goes through these helpers so that an interrupted write never
leaves a file or folder that a later run would trust: data is written to a temporary sibling and
moved into place with ``os.replace`` only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from workbench.errors import WorkbenchError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Works for files and folders alike (the block decides what to create at the yielded path).
    """
    final = Path(path)
    if final.name in ("", ".."):
        raise WorkbenchError(f"cannot write to {path}: name a new file or folder inside it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        with _signals_deferred():  # a Ctrl-C between the two renames would hide the old folder
            if final.is_dir() and target.is_dir():
                # os.replace cannot replace a non-empty folder: move the old one aside first.
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(target, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (main thread, POSIX; else a no-op)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Read JSON, turning a missing or corrupt file into a clear :class:`WorkbenchError`."""
    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"{what} not found: {p} (check the path)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkbenchError(
            f"{what} {p} is not valid JSON ({e}); it may be truncated: recreate it"
        ) from e


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save tensors to one safetensors file, atomically, with JSON metadata in its header.

    The metadata dict is stored under the header key ``"workbench"`` as a JSON string, so a single
    file carries everything needed to reuse it safely.
    """
    if Path(path).is_dir():  # before the work of serialising, not at the final rename
        raise WorkbenchError(
            f"{path} is a folder; save to a file name such as {Path(path) / 'out.safetensors'}"
        )
    header = {"workbench": json.dumps(dict(metadata or {}))}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def load_tensors(
    path: str | os.PathLike[str], what: str = "file"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`: ``(tensors, metadata)``.

    A missing, truncated or corrupt file raises :class:`WorkbenchError` naming the file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"{what} not found: {p} (check the path)")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WorkbenchError(
            f"{what} {p} is corrupt or truncated ({e}); recreate it or restore a copy"
        ) from e
    try:
        meta = json.loads(raw.get("workbench", "{}"))
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"{what} {p} has corrupt metadata ({e}); recreate it") from e
    return tensors, meta
