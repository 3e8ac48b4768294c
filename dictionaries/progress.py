"""Progress lines for fits that may run longer than a few seconds.

A fit runs inside :func:`task`; backends that know their step count call :meth:`Task.advance`.
Nothing is printed unless a caller turned reporting on with :func:`reporting` (the CLI does,
pointing it at stderr so ``--json`` output on stdout stays one object). A fit that ends within
``first`` seconds prints nothing; a longer one prints a line then and every ``every`` seconds
after (from a heartbeat thread, so a fit inside a library call that has no callback, such as
FastICA, still shows that it is alive), and a last line with its time.

>>> with reporting():                                    # doctest: +SKIP
...     with task("sae fit", total=2000) as t:
...         for step in range(2000):
...             t.advance(step + 1)                          # "sae fit: 400/2000 steps (20%), ..."
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

Sink = Callable[[str], None]


@dataclass
class _Settings:
    sink: Sink
    first: float
    every: float


_ACTIVE: ContextVar[_Settings | None] = ContextVar("dictionaries_progress", default=None)
_CURRENT: ContextVar[Task | None] = ContextVar("dictionaries_task", default=None)


def to_stderr(line: str) -> None:
    """The CLI's sink: one flushed line on stderr."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def reporting(sink: Sink = to_stderr, *, first: float = 2.0, every: float = 10.0) -> Iterator[None]:
    """Print progress of every fit inside the block to ``sink``."""
    token = _ACTIVE.set(_Settings(sink, first, every))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@dataclass
class Task:
    """A running fit: what it is, and how far it got (``done`` of ``total`` ``unit``)."""

    what: str
    total: int | None = None
    unit: str = "steps"
    done: int = 0
    start: float = field(default_factory=time.perf_counter)
    lines: int = 0

    def advance(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` units are finished (cheap: printing is the heartbeat's job)."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        if not self.done:
            return f"{self.what}: running, {elapsed:.0f} s"
        if not self.total:
            return f"{self.what}: {self.done} {self.unit}, {elapsed:.0f} s"
        frac = self.done / self.total
        left = f", ~{elapsed * (1 - frac) / frac:.0f} s left" if 0 < frac < 1 else ""
        return (
            f"{self.what}: {self.done}/{self.total} {self.unit} ({frac:.0%}), {elapsed:.0f} s{left}"
        )


@contextlib.contextmanager
def task(what: str, total: int | None = None, unit: str = "steps") -> Iterator[Task]:
    """Run a fit as a reported task (see the module docstring); yields its :class:`Task`."""
    outer = _CURRENT.get()
    if outer is not None:  # a fit inside a fit (fit_stream -> _train) reports as one task
        yield outer
        return
    t = Task(what, total, unit)
    current = _CURRENT.set(t)
    try:
        settings = _ACTIVE.get()
        if settings is None:
            yield t
        else:
            with _heartbeat(t, settings):
                yield t
    finally:
        _CURRENT.reset(current)


def advance(done: int, total: int | None = None) -> None:
    """Record progress on the innermost running :func:`task` (a no-op outside one)."""
    t = _CURRENT.get()
    if t is not None:
        t.advance(done, total)


@contextlib.contextmanager
def _heartbeat(t: Task, settings: _Settings) -> Iterator[None]:
    stop = threading.Event()

    def emit() -> None:
        settings.sink(t.line())
        t.lines += 1

    def beat() -> None:
        wait = settings.first
        while not stop.wait(wait):
            emit()
            wait = settings.every

    thread = threading.Thread(target=beat, name="fit-progress", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join()
        if ok and t.lines:
            settings.sink(f"{t.what}: done in {time.perf_counter() - t.start:.1f} s")
