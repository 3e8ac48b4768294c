"""Where a verb may write: one output policy, a lock per output, and the marker of our folders.

Every verb that writes claims its ``--out`` with :func:`claim_output` before any work starts:

- a new path (or an empty folder) is always fine;
- an existing folder this workbench made (it holds :data:`MARKER`, a JSON ``{kind, created}``)
  is replaced only with ``overwrite`` (or continued with ``resume``, for verbs that append);
- a foreign non-empty folder, an existing file that is not ours, a folder where a file goes,
  the current folder or one holding it are refused with a one-line :class:`WorkbenchError`.

A claim holds an OS lock (``filelock``) on a hidden sibling, ``.NAME.lock``, until released, so
a second writer to the same output is refused at once; ``.NAME.lock.json`` names the holder
(pid, command, host, start time) for the message. Under the lock, temporary folders a killed
writer left behind (``.NAME.<random>.tmp``) are removed, and a replacement interrupted halfway
through is rolled back. :meth:`Output.staged` writes the output to a temporary path and renames
it into place, so an error or Ctrl-C leaves the old output (or nothing) behind.

Example:
    >>> with claim_output("runs/dict", kind="dictionary", overwrite=False) as out:  # doctest: +SKIP
    ...     fit = slow_fit()
    ...     with out.staged() as tmp:
    ...         fit.save(tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from workbench.errors import WorkbenchError, check
from workbench.io import atomic_path, remove

MARKER = ".workbench"

# Locks this process holds, by (output, thread): a claim nested in another claim of the same
# output in the same thread (a verb claims, then the library function it calls claims again)
# shares the outer lock instead of being refused by it.
_HELD: dict[tuple[Path, int], list[Any]] = {}
_HELD_GUARD = threading.Lock()


def marker_kind(path: str | os.PathLike[str]) -> str | None:
    """The ``kind`` recorded in folder ``path``'s marker, or ``None`` when it has none."""
    p = Path(path) / MARKER
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"  # a damaged marker still says the workbench made the folder
    return str(data.get("kind", "unknown")) if isinstance(data, dict) else "unknown"


def write_marker(folder: str | os.PathLike[str], kind: str) -> None:
    """Mark ``folder`` as a workbench output of ``kind``."""
    record = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(folder) / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _is_workbench_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file written by :func:`workbench.io.save_tensors`, or
    a llama.cpp control vector exported by the workbench (its ``workbench.vector`` key)."""
    try:
        with path.open("rb") as f:
            head = f.read(65536)
        if head[:4] == b"GGUF":
            return b"workbench.vector" in head
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                return False
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and "workbench" in (header.get("__metadata__") or {})


def check_output(
    path: str | os.PathLike[str],
    *,
    kind: str,
    overwrite: bool = False,
    resume: bool = False,
    file: bool = False,
    legacy: Callable[[Path], bool] | None = None,
    resumable: bool = False,
) -> Path:
    """Apply the output policy (module docstring) to ``path`` without locking; return it resolved.

    ``file``: the output is one file, not a folder. ``legacy``: recognises folders of ``kind``
    written before folders carried the marker (e.g. an activation store by its manifest).
    ``resumable``: the verb can continue an output (the refusal then mentions ``--resume``).
    """
    given = str(path)
    check(given.strip() != "", "--out is empty: give a new folder or file name")
    final = Path(path).expanduser().resolve()
    cwd = Path.cwd().resolve()
    check(
        final != cwd and final not in cwd.parents,
        f"--out {given} is the current folder or holds it: give a new subfolder, e.g. "
        f"--out {Path(given) / kind}",
    )
    check(
        not final.parent.exists() or final.parent.is_dir(),
        f"--out {given}: {final.parent} is a file, not a folder; choose another --out",
    )
    if file:
        return _check_file(final, given, kind, overwrite)
    if not final.exists() or (final.is_dir() and _empty(final)):
        return final
    check(
        final.is_dir(),
        f"--out {given} is an existing file; the {kind} output is a folder: choose a new --out",
    )
    made = marker_kind(final) or (kind if legacy is not None and legacy(final) else None)
    check(
        made is not None,
        f"--out {given} is a non-empty folder this workbench did not make; nothing in it is "
        "touched: choose a new or empty folder",
    )
    check(
        made == kind,
        f"--out {given} holds a workbench {made} output, not a {kind} output; choose another --out",
    )
    if not (overwrite or resume):
        also = "--resume to continue it, " if resumable else ""
        raise WorkbenchError(
            f"--out {given} already exists (a workbench {kind} output); pass {also}--overwrite "
            "to replace it or choose another --out"
        )
    return final


def _empty(folder: Path) -> bool:
    # A folder holding only our marker (a run that stopped before writing) counts as empty.
    return all(p.name == MARKER for p in folder.iterdir())


def _check_file(final: Path, given: str, kind: str, overwrite: bool) -> Path:
    check(
        not final.is_dir(),
        f"--out {given} is a folder; the {kind} is one file: give a file name, e.g. "
        f"--out {Path(given) / kind}.safetensors",
    )
    if final.exists():
        check(overwrite, f"{given} already exists: choose another --out or pass --overwrite")
        check(
            _is_workbench_file(final),
            f"{given} is a file this workbench did not write; it is kept: choose another --out",
        )
    return final


def lock_path(final: Path) -> Path:
    """The lock file of output ``final``: a hidden sibling, so it outlives a replaced folder."""
    return final.with_name(f".{final.name}.lock")


def _holder(final: Path) -> str:
    info_file = lock_path(final).with_suffix(".lock.json")
    # The holder writes its info right after taking the lock: give it a moment to do so.
    for _ in range(20):
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
            return (
                f"pid {info['pid']} on {info['host']}, `{info['command']}`, since {info['started']}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not said who it is"


def _acquire(final: Path, given: str) -> FileLock:
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(final)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise WorkbenchError(
            f"--out {given} is being written by another workbench run ({_holder(final)}); "
            "wait for it to finish or choose another --out"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(OSError):
        lock_path(final).with_suffix(".lock.json").write_text(json.dumps(info), encoding="utf-8")
    return lock


def _release(final: Path, lock: FileLock) -> None:
    with contextlib.suppress(OSError):
        lock_path(final).with_suffix(".lock.json").unlink(missing_ok=True)
    lock.release()


def clean_stale(final: Path) -> None:
    """Remove what a killed writer of ``final`` left beside it (call only under its lock).

    Temporary folders ``.NAME.<8 random characters>.tmp`` go; a folder moved aside to
    ``.NAME.old`` while being replaced is put back when the replacement never arrived.
    """
    parent = final.parent
    if not parent.is_dir():
        return
    temp = re.compile(re.escape(f".{final.name}.") + r"[A-Za-z0-9_]{8}\.tmp")
    for p in parent.iterdir():
        if temp.fullmatch(p.name):
            remove(p)
    old = parent / f".{final.name}.old"
    if old.exists():
        if final.exists():
            remove(old)
        else:
            os.replace(old, final)


@dataclass
class Output:
    """A claimed output: checked, locked, released by :meth:`release` or the ``with`` block."""

    path: Path  # where the output ends up, resolved
    kind: str
    file: bool
    _key: tuple[Path, int] = field(repr=False)
    _released: bool = field(default=False, repr=False)

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A temporary path to write the whole output at; renamed onto :attr:`path` on success.

        For a folder output the temporary folder exists already and gets the marker after the
        block (so a block that replaces the folder, like ``Dictionary.save``, keeps it).
        """
        with atomic_path(self.path) as tmp:
            if not self.file:
                tmp.mkdir()
            yield tmp
            if not self.file:
                write_marker(tmp, self.kind)

    def mark(self) -> None:
        """Create the folder in place and mark it (for outputs written in place, like a store)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_marker(self.path, self.kind)

    def release(self) -> None:
        """Drop this claim; the lock goes when the outermost claim of the output is released."""
        if self._released:
            return
        self._released = True
        with _HELD_GUARD:
            entry = _HELD[self._key]
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _HELD[self._key]
        if last:
            _release(self.path, entry[0])

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_output(
    path: str | os.PathLike[str],
    *,
    kind: str,
    overwrite: bool = False,
    resume: bool = False,
    file: bool = False,
    legacy: Callable[[Path], bool] | None = None,
    resumable: bool = False,
) -> Output:
    """Check ``path`` against the output policy and lock it; see the module docstring.

    ``kind`` names what is written (``activations``, ``dictionary``, ``discover``, ``vector``,
    ``sweep``, ...): a folder of one kind is never replaced by an output of another. Use the
    result as a context manager (or call :meth:`Output.release`) so the lock is dropped.
    """
    opts: dict[str, Any] = {
        "kind": kind,
        "overwrite": overwrite,
        "resume": resume,
        "file": file,
        "legacy": legacy,
        "resumable": resumable,
    }
    final = check_output(path, **opts)
    key = (final, threading.get_ident())
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is not None:
            entry[1] += 1
            return Output(final, kind, file, key)
    lock = _acquire(final, str(path))
    try:
        clean_stale(final)
        check_output(path, **opts)  # again: another writer may have finished meanwhile
    except BaseException:
        _release(final, lock)
        raise
    with _HELD_GUARD:
        _HELD[key] = [lock, 1]
    return Output(final, kind, file, key)
