from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workbench.activations.store import ActivationStore
from workbench.cli import main
from workbench.model.load import Model

LINES = [
    "Hello world, I love you",
    "The fox",
    "Numbers 0 1 2 3 and the quick brown fox jumps over the lazy dog.",
    "Rain and sunshine",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def _capture(model_dir: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "capture",
        "--model",
        str(model_dir),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_json_output(
    tiny_model: Model,
    tiny_model_dir: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "s"
    rc = main(
        [
            *_capture(tiny_model_dir, corpus, out, "--layers", "3,1", "--store-dtype", "float32"),
            "--json",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data)[:8] == [
        "path",
        "model",
        "site",
        "layers",
        "positions",
        "tokens",
        "d_model",
        "tokens_per_s",
    ]
    store = ActivationStore.open(out)
    assert data["path"] == str(out) and data["model"] == str(tiny_model_dir)
    assert data["layers"] == [1, 3] and data["site"] == "resid_pre" and data["positions"] == "all"
    assert (
        data["tokens"] == store.n_rows == sum(len(tiny_model.encode([t])[0][0]) - 1 for t in LINES)
    )
    assert data["d_model"] == 64 and data["tokens_per_s"] > 0
    assert store.manifest["corpus"]["source"] == str(corpus)


def test_human_output_reports_truncation(
    tiny_model: Model,
    tiny_model_dir: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lengths = [len(tiny_model.encode([t])[0][0]) for t in LINES]
    rc = main(
        [
            *_capture(
                tiny_model_dir,
                corpus,
                tmp_path / "s",
                "--layers",
                "2",
                "--positions",
                "last",
                "--max-tokens",
                "4",
            )
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    tokens = sum(min(n, 4) - 1 for n in lengths)
    assert f"captured {tokens} tokens (4 rows, 4 documents" in text and "tokens/s" in text
    assert f"{sum(n > 4 for n in lengths)} document(s) were longer than 4 tokens" in text
    assert 1 <= sum(n > 4 for n in lengths) < 4


def test_resume_on_a_complete_store_is_a_noop(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _capture(tiny_model_dir, corpus, tmp_path / "s", "--layers", "1")
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "7"], r"layer 7 is out of range .*valid layers are 0\.\.3"),
        (["--layers", "a,b"], "--layers 'a,b' is not a list of layers"),
        (["--layers", "1", "--max-tokens", "1"], "at least 2"),
    ],
)
def test_bad_arguments(
    tiny_model_dir: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "s"
    assert main([*_capture(tiny_model_dir, corpus, out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("workbench capture: error:")
    assert re.search(message, err)
    assert not out.exists()


def test_bad_corpora(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    for corpus, message in [
        (latin1, "not valid UTF-8"),
        (empty, "no documents"),
        (tmp_path / "missing.txt", "does not exist"),
    ]:
        out = tmp_path / "s"
        assert main([*_capture(tiny_model_dir, corpus, out, "--layers", "1")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_existing_store_needs_resume_or_overwrite(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _capture(tiny_model_dir, corpus, tmp_path / "s", "--layers", "1")
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] is False
