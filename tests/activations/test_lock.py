"""Two writers of one store: exactly one succeeds, the other is refused at once, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workbench.activations.capture import CaptureProgress, capture
from workbench.activations.store import ActivationStore
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.model.load import Model

DOCS = [f"Text {i}: the quick brown fox jumps over dog number {i}." for i in range(12)]
OTHER = ["A different corpus.", "With fewer documents."]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_concurrent_captures_exactly_one_succeeds(
    tiny_model: Model, tmp_path: Path, overwrite: bool
) -> None:
    out = tmp_path / "store"
    if overwrite:  # both replace an existing store, the case that lost data before
        capture(tiny_model, OTHER, [1], out=out, progress_bar=False)
    start = threading.Barrier(2)
    loser_done = threading.Event()
    results: dict[str, object] = {}

    def hold(p: CaptureProgress) -> None:  # the winner waits inside its capture for the loser
        loser_done.wait(timeout=60)

    def writer(name: str, docs: list[str]) -> None:
        start.wait()
        try:
            res = capture(
                tiny_model, docs, [1], out=out, overwrite=overwrite, batch_size=2, progress=hold,
                progress_bar=False, shard_rows=8,
            )  # fmt: skip
            results[name] = res
        except WorkbenchError as e:
            results[name] = e
            loser_done.set()

    threads = [threading.Thread(target=writer, args=(n, d)) for n, d in (("a", DOCS), ("b", OTHER))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    errors = [r for r in results.values() if isinstance(r, WorkbenchError)]
    done = [r for r in results.values() if not isinstance(r, WorkbenchError)]
    assert len(errors) == 1 and len(done) == 1, results
    message = str(errors[0])
    assert "\n" not in message and "being written by another workbench run" in message
    assert f"pid {os.getpid()}" in message
    store = ActivationStore.open(out)  # complete, and wholly the winner's
    winner = next(n for n, r in results.items() if r is done[0])
    assert store.manifest["n_docs"] == len(DOCS if winner == "a" else OTHER)


def test_a_second_capture_process_is_refused_naming_the_holder(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from workbench.activations.writer import "
            "claim_store; c, _ = claim_store(Path(sys.argv[1]), resume=False, overwrite=True); "
            "print('held', flush=True); sys.stdin.read(); c.release()",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        argv = [
            "capture", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--layers", "1",
            "--out", str(out), "--overwrite", "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"pid {holder.pid}" in err and "wait for it" in err
        assert not out.exists()  # refused before anything was written
    finally:
        holder.communicate(input="", timeout=30)
    assert main(argv) == 0  # free once the holder is gone
    assert ActivationStore.open(out).manifest["n_docs"] == len(DOCS)


def test_readers_of_an_incomplete_store_are_still_refused(tiny_model: Model, tmp_path: Path):
    out = tmp_path / "store"

    def stop(p: CaptureProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture(tiny_model, DOCS, [1], out=out, progress=stop, progress_bar=False, shard_rows=4)
    with pytest.raises(WorkbenchError, match="incomplete"):
        ActivationStore.open(out)
    res = capture(tiny_model, DOCS, [1], out=out, resume=True, progress_bar=False, shard_rows=4)
    assert res.resumed and ActivationStore.open(out).n_rows == res.rows
