"""The dashboard's workspace root: paths outside it are refused on read and on write."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.paths import ENV_ROOT, corpus_inside_root, inside_root, save_vector
from workbench.commands import app as app_command
from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.vectors.build import from_prompts

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    monkeypatch.setenv(ENV_ROOT, str(ws))
    return ws.resolve()


@pytest.mark.parametrize(
    ("given", "inside"),
    [
        ("data/c.txt", True),
        ("./data/../c.txt", True),
        ("{root}/data/c.txt", True),
        ("{root}", True),
        ("../c.txt", False),
        ("data/../../c.txt", False),
        ("/etc/passwd", False),
        ("{root}/../ws-other/c.txt", False),
        ("link/c.txt", False),  # a symlink inside the root that points out of it
    ],
)
def test_inside_root(root: Path, given: str, inside: bool) -> None:
    (root / "link").symlink_to(root.parent)
    path = given.format(root=root)
    if inside:
        assert root in (p := inside_root(path, "corpus")).parents or p == root
    else:
        with pytest.raises(WorkbenchError, match="corpus .* is outside the workspace root") as e:
            inside_root(path, "corpus")
        assert "\n" not in str(e.value)


def test_the_default_root_is_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_ROOT, raising=False)
    monkeypatch.chdir(tmp_path)
    assert inside_root("a.txt") == tmp_path.resolve() / "a.txt"
    with pytest.raises(WorkbenchError, match="outside"):
        inside_root(tmp_path.parent / "a.txt")


def test_builtin_corpora_pass_and_files_are_checked(root: Path) -> None:
    assert corpus_inside_root("builtin:happy") == "builtin:happy"
    assert corpus_inside_root("data/c.txt") == str(root / "data" / "c.txt")
    with pytest.raises(WorkbenchError, match="positive texts /tmp/x.jsonl is outside"):
        corpus_inside_root("/tmp/x.jsonl", "positive texts")
    with pytest.raises(WorkbenchError, match="no corpus given"):
        corpus_inside_root("  ")


def test_save_vector_stays_inside_and_keeps_foreign_files(root: Path, tiny_model: Model) -> None:
    vec = from_prompts(tiny_model, "A", "B", layers=1)
    saved = save_vector(vec, "vectors/a.safetensors")
    assert saved == root / "vectors" / "a.safetensors"
    assert save_vector(vec, saved) == saved  # its own earlier file is replaced
    (root / "mine.safetensors").write_text("my own file")
    with pytest.raises(WorkbenchError, match="did not write"):
        save_vector(vec, "mine.safetensors")
    with pytest.raises(WorkbenchError, match="outside"):
        save_vector(vec, root.parent / "out.safetensors")
    assert not (root.parent / "out.safetensors").exists()


def _ns(root: Path | str, workdir: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(root=str(root), workdir=workdir)


def test_app_command_confines_the_dashboard(tmp_path: Path) -> None:
    env = app_command.workspace(_ns(tmp_path, "runs/app"))
    assert env[app_command.ENV_ROOT] == str(tmp_path.resolve())
    assert env[app_command.ENV_DIR] == str(tmp_path.resolve() / "runs" / "app")
    with pytest.raises(WorkbenchError, match="--workdir /elsewhere is outside --root"):
        app_command.workspace(_ns(tmp_path, "/elsewhere"))
    (tmp_path / "f").write_text("")
    with pytest.raises(WorkbenchError, match="is not a folder"):
        app_command.workspace(_ns(tmp_path / "f"))


@pytest.fixture
def at(tiny_model: Model, root: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("WORKBENCH_APP_MODEL", tiny_model.name)
    monkeypatch.setenv("WORKBENCH_APP_DIR", str(root / "work"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    test = AppTest.from_file(str(MAIN), default_timeout=60)
    test.run()
    assert not test.exception
    return test


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [str(e.value) for e in at.error]


@pytest.mark.parametrize(
    ("corpus", "out", "message"),
    [
        ("{outside}/c.txt", "{root}/work/s", "corpus {outside}/c.txt is outside"),
        ("{root}/data/c.txt", "{outside}/store", "store folder {outside}/store is outside"),
    ],
)
def test_data_page_refuses_paths_outside_the_root(
    at: AppTest, root: Path, corpus: str, out: str, message: str
) -> None:
    outside = root.parent
    (root / "data" / "c.txt").write_text("one document\nanother one\n")
    (outside / "c.txt").write_text("secret\nfile\n")
    fill = {"root": root, "outside": outside}
    at.switch_page("views/1_model_and_data.py").run()
    at.radio(key="data_kind").set_value("File path").run()
    at.text_input(key="data_path").set_value(corpus.format(**fill)).run()
    at.text_input(key="data_out").set_value(out.format(**fill))
    at.button(key="data_capture").click().run()
    assert any(message.format(**fill) in m for m in _errors(at)), _errors(at)
    assert not (outside / "store").exists()

    at.text_input(key="store_in").set_value(str(outside)).run()
    assert any("store" in m and "is outside the workspace root" in m for m in _errors(at))
