"""The output policy and lock of workbench/outputs.py, and atomic_path's clean-up."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.io import atomic_path, save_tensors
from workbench.outputs import MARKER, claim_output, lock_path, marker_kind, write_marker


def _ours(path: Path, kind: str = "dictionary") -> Path:
    path.mkdir()
    write_marker(path, kind)
    (path / "config.json").write_text("{}")
    return path


def _marked_only(path: Path) -> Path:
    path.mkdir()
    write_marker(path, "sweep")
    return path


def _foreign(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    return path


def _file(path: Path) -> Path:
    path.write_text("mine")
    return path


@pytest.mark.parametrize(
    ("make", "overwrite", "error"),
    [
        (None, False, None),  # a new path
        (Path.mkdir, False, None),  # an empty folder
        (lambda p: _marked_only(p), False, None),  # only a marker: a run that stopped early
        (_ours, False, "already exists .*pass --overwrite"),
        (_ours, True, None),
        (_foreign, False, "folder this workbench did not make"),
        (_foreign, True, "folder this workbench did not make"),
        (_file, False, "is an existing file"),
        (_file, True, "is an existing file"),
        (lambda p: _ours(p, "activations"), True, "holds a workbench activations output"),
    ],
)
def test_folder_policy(tmp_path: Path, make, overwrite: bool, error: str | None) -> None:
    out = tmp_path / "out"
    if make is not None:
        make(out)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    if error is None:
        with claim_output(out, kind="dictionary", overwrite=overwrite) as claim:
            assert claim.path == out.resolve()
        return
    with pytest.raises(WorkbenchError, match=error) as e:
        claim_output(out, kind="dictionary", overwrite=overwrite)
    assert "\n" not in str(e.value)
    if before is not None:  # nothing in it was touched
        assert sorted(p.name for p in out.iterdir()) == before


def _vector_file(path: Path) -> Path:
    save_tensors(path, {"x": torch.zeros(2)}, {"format": "test"})
    return path


@pytest.mark.parametrize(
    ("make", "overwrite", "error"),
    [
        (None, False, None),
        (_vector_file, False, "already exists"),
        (_vector_file, True, None),
        (_file, True, "did not write; it is kept"),
        (Path.mkdir, False, "is a folder"),
        (_foreign, True, "is a folder"),
    ],
)
def test_file_policy(tmp_path: Path, make, overwrite: bool, error: str | None) -> None:
    out = tmp_path / "v.safetensors"
    if make is not None:
        make(out)
    if error is None:
        claim_output(out, kind="vector", overwrite=overwrite, file=True).release()
    else:
        with pytest.raises(WorkbenchError, match=error):
            claim_output(out, kind="vector", overwrite=overwrite, file=True)


@pytest.mark.parametrize("given", [".", "..", "./"])
def test_the_current_folder_or_one_holding_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.chdir(_ours(tmp_path / "here"))
    with pytest.raises(WorkbenchError, match="current folder"):
        claim_output(given, kind="dictionary", overwrite=True)


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    errors: list[str] = []

    def second() -> None:  # another thread: its own lock handle, so it contends like a process
        try:
            claim_output(out, kind="dictionary").release()
        except WorkbenchError as e:
            errors.append(str(e))

    with claim_output(out, kind="dictionary"):
        nested = claim_output(out, kind="dictionary")  # same thread: shares the lock
        nested.release()
        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "being written by another workbench run" in errors[0]
    assert f"pid {os.getpid()}" in errors[0]
    claim_output(out, kind="dictionary").release()  # free again once released
    assert not lock_path(out.resolve()).with_suffix(".lock.json").exists()


def test_staged_folder_is_marked_and_replaces_only_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claim_output(out, kind="dictionary") as claim, claim.staged() as tmp:
        (tmp / "a.txt").write_text("1")
    assert marker_kind(out) == "dictionary" and (out / "a.txt").read_text() == "1"
    with claim_output(out, kind="dictionary", overwrite=True) as claim, claim.staged() as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"]
    assert json.loads((out / MARKER).read_text())["kind"] == "dictionary"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_failed_or_interrupted_write_leaves_no_temp_and_the_old_output(
    tmp_path: Path, exc: type[BaseException]
) -> None:
    out = _ours(tmp_path / "out")
    claim = claim_output(out, kind="dictionary", overwrite=True)
    with pytest.raises(exc), claim, claim.staged() as tmp:
        (tmp / "half.txt").write_text("x")
        raise exc()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "config.json"]


def test_a_claim_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = tmp_path / ".out.abcd1234.tmp"  # as atomic_path names its temporary folders
    other = tmp_path / ".out.b.abcd1234.tmp"  # belongs to an output called out.b: kept
    stale.mkdir()
    other.mkdir()
    _ours(tmp_path / ".out.old")  # killed between atomic_path's two renames
    with claim_output(out, kind="dictionary", overwrite=True):
        pass
    assert not stale.exists() and other.exists()
    assert marker_kind(out) == "dictionary" and not (tmp_path / ".out.old").exists()


@pytest.mark.parametrize("given", [".", ""])
def test_atomic_path_refuses_a_nameless_path(given: str) -> None:
    with pytest.raises(WorkbenchError, match="name a new file or folder"), atomic_path(given):
        pass


def test_save_tensors_refuses_a_folder_before_writing(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="is a folder"):
        save_tensors(tmp_path, {"x": torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []
