"""Every writing verb under the one output policy: refused before any work with a one-line error
(exit 2), nothing the user made touched; SIGTERM removes the temporary output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.activations.capture import capture
from workbench.cli import main
from workbench.model.load import Model
from workbench.outputs import MARKER, marker_kind, write_marker
from workbench.vectors.build import from_prompts

DOCS = [f"Document {i} is about the topic number {i % 3} and more." for i in range(8)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def acts(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "acts"
    capture(tiny_model, DOCS, [1], out=out, progress_bar=False)
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


def _argv(verb: str, model_dir: Path, acts: Path, corpus: Path, out: Path) -> list[str]:
    return {
        "capture": [
            "capture", "--model", str(model_dir), "--corpus", str(corpus), "--layers", "1",
            "--no-progress", "--out", str(out),
        ],
        "decompose": [
            "decompose", "--acts", str(acts), "--layer", "1", "--k", "2", "--no-loss",
            "--out", str(out),
        ],
        "discover": [
            "discover", "--acts", str(acts), "--layer", "1", "--k", "2", "--out", str(out),
        ],
        "vector": [
            "vector", "from-prompts", "--model", str(model_dir), "--layer", "1", "--pos", "Love",
            "--neg", "Hate", "--out", str(out),
        ],
    }[verb]  # fmt: skip


FOLDER_VERBS = ["capture", "decompose", "discover"]
KINDS = {"capture": "activations", "decompose": "dictionary", "discover": "discover"}


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


@pytest.mark.parametrize("verb", [*FOLDER_VERBS, "vector"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_existing_file_is_refused_and_kept(
    verb: str,
    overwrite: bool,
    tiny_model_dir: Path,
    acts: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / ("mine.safetensors" if verb == "vector" else "mine")
    out.write_text("my own work")
    flags = ["--overwrite"] if overwrite else []
    match = "already exists" if verb == "vector" and not overwrite else "file"
    _refused(capsys, [*_argv(verb, tiny_model_dir, acts, corpus, out), *flags], match)
    assert out.read_text() == "my own work"


@pytest.mark.parametrize("verb", FOLDER_VERBS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_folder_is_refused_and_untouched(
    verb: str,
    overwrite: bool,
    tiny_model_dir: Path,
    acts: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    flags = ["--overwrite"] if overwrite else []
    argv = [*_argv(verb, tiny_model_dir, acts, corpus, out), *flags]
    _refused(capsys, argv, "this workbench did not make")
    assert [p.name for p in out.iterdir()] == ["report.html"]


@pytest.mark.parametrize("verb", FOLDER_VERBS)
def test_a_workbench_folder_is_replaced_only_with_overwrite(
    verb: str,
    tiny_model_dir: Path,
    acts: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "made"
    out.mkdir()
    write_marker(out, KINDS[verb])
    (out / "old.txt").write_text("an earlier run")
    argv = _argv(verb, tiny_model_dir, acts, corpus, out)
    _refused(capsys, argv, "--overwrite")
    assert (out / "old.txt").exists()
    if verb == "discover":
        return  # its full run is covered in test_cli_discover.py
    assert main([*argv, "--overwrite"]) == 0
    assert marker_kind(out) == KINDS[verb]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("verb", [*FOLDER_VERBS, "vector"])
def test_out_dot_is_refused(
    verb: str,
    tiny_model_dir: Path,
    acts: Path,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [*_argv(verb, tiny_model_dir, acts, corpus, Path(".")), "--overwrite"]
    _refused(capsys, argv, "folder" if verb == "vector" else "current folder")


def test_vector_out_naming_a_folder_is_refused(
    tiny_model_dir: Path, acts: Path, corpus: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "X.safetensors"
    out.mkdir()
    argv = [*_argv("vector", tiny_model_dir, acts, corpus, out), "--overwrite"]
    _refused(capsys, argv, "is a folder")
    assert out.is_dir() and not any(out.iterdir())


def test_vector_overwrite_replaces_a_vector_it_wrote(
    tiny_model: Model, tiny_model_dir: Path, acts: Path, corpus: Path, tmp_path: Path
) -> None:
    out = from_prompts(tiny_model, "A", "B", layers=1).save(tmp_path / "v.safetensors")
    assert main([*_argv("vector", tiny_model_dir, acts, corpus, out), "--overwrite"]) == 0


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_sigterm_removes_the_temporary_output(tiny_model_dir: Path, acts: Path, tmp_path: Path):
    """discover writes into a hidden temporary folder for most of its run: a SIGTERM there
    exits 143 and leaves neither the temporary folder nor a partial --out."""
    out = tmp_path / "disc"
    argv = [*_argv("discover", tiny_model_dir, acts, tmp_path, out), "--n-prompts", "64"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", *argv],
        env=_child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".disc")) in (
        [],
        [".disc.lock"],  # the lock file itself may stay; it holds nothing
    )
    assert not out.exists()
    assert MARKER  # the marker constant is what the policy reads


def test_an_error_raised_while_unwinding_a_sigterm_still_reports_the_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CI once saw a SIGTERM land inside shutil.rmtree, whose cleanup then raised EBADF: the
    run must still exit 143 with the one-line message, not 1 with a traceback."""
    import workbench.commands.models as models
    from workbench.cli import Terminated

    def run(args: object) -> None:
        try:
            raise Terminated()
        except Terminated:
            raise OSError(9, "Bad file descriptor") from None

    monkeypatch.setattr(models, "run", run)
    assert main(["models"]) == 128 + signal.SIGTERM
    assert "models: terminated; completed work was kept" in capsys.readouterr().err


def test_an_ordinary_error_is_not_taken_for_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.commands.models as models

    def run(args: object) -> None:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(models, "run", run)
    with pytest.raises(OSError):
        main(["models"])


def test_remove_holds_signals_until_the_tree_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM sent while remove() runs arrives after it, with the folder fully removed."""
    import shutil

    from workbench.cli import Terminated, _terminate
    from workbench.io import remove

    tree = tmp_path / "tree"
    for i in range(50):
        (tree / f"d{i}").mkdir(parents=True)
        (tree / f"d{i}" / "f").write_text("x")
    real = shutil.rmtree

    def rmtree_with_signal(path: Path, ignore_errors: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # held: delivered only after the removal
        time.sleep(0.05)  # give a handler that was not held the chance to run here
        real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr("workbench.io.shutil.rmtree", rmtree_with_signal)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(Terminated):
            remove(tree)
        assert not tree.exists()
    finally:
        signal.signal(signal.SIGTERM, previous)
