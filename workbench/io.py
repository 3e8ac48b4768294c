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
                remove(old)
                os.replace(final, old)
                os.replace(target, final)
                remove(old)
            else:
                os.replace(target, final)
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    """Remove a file or folder tree if it exists, with SIGINT and SIGTERM held until done.

    An interrupt raised inside ``shutil.rmtree``'s descriptor walk makes it close a descriptor
    twice, and the ``OSError`` that follows replaces the interrupt (a SIGTERM then exits 1 with a
    traceback instead of 143). Cleanup is short, so the signal simply waits for it.
    """
    with _signals_deferred():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then deliver them (main thread only;
    elsewhere a no-op, as Python runs signal handlers only in the main thread).

    The handlers are swapped for one that records the signal, rather than masking the signal:
    a mask set in the main thread does not cover threads started earlier (torch's pools), and
    the kernel hands a process-wide signal to any thread that does not block it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in held}
    for s in held:
        if previous[s] is not None:  # None: a handler set outside Python, left alone
            signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


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
