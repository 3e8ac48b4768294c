"""A capture SIGKILLed at random moments and resumed ends row for row equal to an uninterrupted one.

Each interrupted run is a real ``workbench capture`` process killed with SIGKILL: nothing of it
runs afterwards (no ``finally``, no signal handler), so the store, its lock and the temporary
files are left exactly as the kill found them. Importing torch and transformers takes most of a
fresh interpreter's start-up, so the runs are forked from one helper process that imported them
once; each fork still loads the model and claims the store itself.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from workbench.activations.store import DOCS, MANIFEST, ActivationStore
from workbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = 17
ROUNDS = 3  # kills before the final, uninterrupted resume
TIMING_KEYS = {"created", "updated", "elapsed_s", "tokens_per_s"}
TEXT = (
    "the quick brown fox jumps over a lazy dog while rain falls on music law science and "
    "cooking at weddings where brides walk down the aisle and numbers 0 1 2 3 count"
)

# Forks one `workbench capture` per JSON argv line on stdin; prints "pid N", then "exit RC".
# Torch stays on one thread so every run computes bit-identical rows, and no thread pool exists
# when forking.
_FORKER = """
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
from workbench.cli import main
from workbench.model.load import load_model
load_model(sys.argv[1], reuse=False)  # import everything loading needs, once
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is our channel to the test
        rc = 1
        try:
            rc = main(json.loads(line))
        except BaseException:
            traceback.print_exc()
        sys.stderr.flush()
        os._exit(rc)
    print(f"pid {pid}", flush=True)
    print(f"exit {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}", flush=True)
"""


class _Forker:
    """The helper process of :data:`_FORKER` and the line protocol to it."""

    def __init__(self, model_dir: Path, log: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.log = log
        self._err = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORKER, str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    def _line(self, timeout: float) -> str | None:
        """The next line from the helper, or ``None`` if none arrives within ``timeout``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"capture helper died:\n{self.log.read_text()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, prefix: str, timeout: float = 120.0) -> str:
        line = self._line(timeout)
        assert line is not None, f"no '{prefix}' from the capture helper in {timeout} s"
        assert line.startswith(prefix), line
        return line[len(prefix) :].strip()

    def start(self, argv: list[str]) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(argv) + "\n").encode())
        return int(self.expect("pid"))

    def exited(self, timeout: float) -> int | None:
        """The running capture's exit code if it ends within ``timeout``, else ``None``."""
        line = self._line(timeout)
        if line is None:
            return None
        assert line.startswith("exit "), line
        return int(line[5:])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@pytest.fixture
def forker(tiny_model_dir: Path, tmp_path: Path) -> Iterator[_Forker]:
    f = _Forker(tiny_model_dir, tmp_path / "forker.log")
    try:
        yield f
    finally:
        f.close()


def _shards(store: Path) -> int:
    return len(list(store.glob("shard-*.safetensors")))


def _complete(store: Path) -> bool:
    try:
        return bool(json.loads((store / MANIFEST).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _kill_round(
    forker: _Forker, argv: list[str], store: Path, *, delay: float, after_new_shard: bool
) -> tuple[int, float]:
    """Run one capture and SIGKILL it ``delay`` seconds after it starts, or after it writes its
    next shard. Returns its exit code (``-SIGKILL`` if the kill landed before it ended) and how
    many seconds it ran."""
    shards_before = _shards(store) if store.is_dir() else 0
    started = time.monotonic()
    pid = forker.start(argv)
    rc: int | None = None
    if after_new_shard:
        while rc is None and not (store.is_dir() and _shards(store) > shards_before):
            rc = forker.exited(0.005)
            assert time.monotonic() < started + 120, "capture wrote no shard in 120 s"
    if rc is None:
        rc = forker.exited(delay)
    if rc is None:
        os.kill(pid, signal.SIGKILL)  # the helper has not reaped it yet, so the pid is ours
        rc = forker.exited(30)
        assert rc is not None, "the killed capture did not end"
    else:  # it ended before the kill: only by finishing the store
        assert rc == 0 and _complete(store), f"capture exit code {rc}:\n{forker.log.read_text()}"
    return rc, time.monotonic() - started


def test_capture_killed_at_random_moments_resumes_row_for_row(
    tiny_model_dir: Path, tmp_path: Path, forker: _Forker
) -> None:
    rng = random.Random(SEED)
    words = TEXT.split()
    corpus = tmp_path / "corpus.txt"
    lines = (" ".join(rng.choices(words, k=rng.randint(4, 40))) for _ in range(400))
    corpus.write_text("\n".join(lines) + "\n")
    a, b = tmp_path / "a", tmp_path / "b"

    def argv(out: Path, *flags: str) -> list[str]:
        return [
            "capture", "--model", str(tiny_model_dir), "--corpus", str(corpus),
            "--layers", "0,2,3", "--batch-size", "8", "--shard-rows", "150", "--no-progress",
            "--out", str(out), *flags,
        ]  # fmt: skip

    # The reference, uninterrupted, in this process (on one torch thread, as in the helper)
    # while the helper starts up.
    assert main(argv(a)) == 0
    forker.expect("ready")
    expected_s = 0.0

    partial_kills = 0
    for i in range(ROUNDS):
        rc, ran_s = _kill_round(
            forker,
            argv(b, "--resume") if i else argv(b),
            b,
            # The first kill soon after a shard lands; the others anywhere from start-up to the
            # expected end (before anything is written, mid-capture or after completion).
            delay=rng.uniform(0, 0.2) if i == 0 else rng.uniform(0, expected_s),
            after_new_shard=i == 0,
        )
        if i == 0:  # start-up as measured, then the reference's capture time
            expected_s = ran_s + ActivationStore.open(a).manifest["elapsed_s"]
        if rc == -signal.SIGKILL and not _complete(b) and _shards(b) > 0:
            partial_kills += 1
    assert partial_kills >= 1, "no kill landed mid-capture; the test tested nothing"

    # The killed holders' locks went with them, so the resume is not refused.
    forker.start(argv(b, "--resume"))
    assert forker.exited(120) == 0, forker.log.read_text()

    ref, got = ActivationStore.open(a), ActivationStore.open(b)  # raises unless b is complete
    assert got.n_rows == ref.n_rows > 0
    for layer in ref.layers:
        assert torch.equal(got.load(layer), ref.load(layer)), f"layer {layer}: rows differ"
    for x, y in zip(got.rows_meta(), ref.rows_meta(), strict=True):
        assert torch.equal(x, y)
    assert (b / DOCS).read_bytes() == (a / DOCS).read_bytes()
    untimed = [{k: v for k, v in s.manifest.items() if k not in TIMING_KEYS} for s in (got, ref)]
    assert untimed[0] == untimed[1]
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    for shard in a.glob("shard-*.safetensors"):
        assert (b / shard.name).read_bytes() == shard.read_bytes(), shard.name
    left = [
        p.name for p in [*b.iterdir(), *tmp_path.iterdir()] if p.name.endswith((".tmp", ".old"))
    ]
    assert not left, f"temporary files left behind: {left}"
