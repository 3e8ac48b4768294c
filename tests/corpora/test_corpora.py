"""Tests for the built-in corpora and the corpus loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workbench.corpora import DATA_DIR, builtin_path, list_builtin, load_corpus
from workbench.errors import WorkbenchError

# Minimum document counts the rest of the workbench relies on.
MIN_COUNTS: dict[str, int] = {
    "general": 320,
    "loving": 60,
    "hateful": 60,
    "wedding": 60,
    "unrelated": 60,
    "formal": 60,
    "casual": 60,
    "happy": 60,
    "sad": 60,
    "sports": 60,
    "cooking": 60,
    "neutral_prompts": 40,
}
PAIRS = [("loving", "hateful"), ("wedding", "unrelated"), ("formal", "casual"), ("happy", "sad")]


# --- built-in sets ----------------------------------------------------------------------------


def test_every_data_file_is_a_listed_builtin() -> None:
    on_disk = {p.stem for p in DATA_DIR.glob("*.txt")}
    assert on_disk == set(list_builtin()) == set(MIN_COUNTS)


@pytest.mark.parametrize("name", sorted(MIN_COUNTS))
def test_builtin_loads_with_minimum_count_and_no_duplicates(name: str) -> None:
    docs = load_corpus(f"builtin:{name}")
    assert len(docs) >= MIN_COUNTS[name]
    assert len(set(docs)) == len(docs), "duplicate documents"
    # Every line of the shipped file is a document: no blank lines, no stray whitespace.
    raw = builtin_path(name).read_text(encoding="utf-8").splitlines()
    assert raw == docs
    assert all(d == d.strip() for d in docs)


@pytest.mark.parametrize("name", sorted(set(MIN_COUNTS) - {"neutral_prompts"}))
def test_builtin_documents_are_short_passages(name: str) -> None:
    for doc in load_corpus(f"builtin:{name}"):
        assert 10 <= len(doc.split()) <= 60, doc


def test_neutral_prompts_are_short_openings() -> None:
    for doc in load_corpus("builtin:neutral_prompts"):
        assert 2 <= len(doc.split()) <= 15, doc


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_contrastive_pairs_do_not_share_documents(a: str, b: str) -> None:
    assert not set(load_corpus(f"builtin:{a}")) & set(load_corpus(f"builtin:{b}"))


def test_formal_and_casual_are_line_aligned() -> None:
    assert len(load_corpus("builtin:formal")) == len(load_corpus("builtin:casual"))


def test_wedding_set_is_about_weddings_and_unrelated_is_not() -> None:
    core = ("wedding", "bride", "groom", "vow", "marri")
    scene = ("husband", "ceremony", "reception", "aisle")
    wedding = load_corpus("builtin:wedding")
    assert all(any(w in d.lower() for w in core + scene) for d in wedding)
    unrelated = load_corpus("builtin:unrelated")
    assert not any(any(w in d.lower() for w in core) for d in unrelated)


def test_list_builtin_describes_each_set_with_its_count() -> None:
    listing = list_builtin()
    for name, description in listing.items():
        n = len(load_corpus(f"builtin:{name}"))
        assert description.endswith(f"({n} documents)")
        assert "\n" not in description


def test_builtin_path_accepts_prefix_and_suffix() -> None:
    path = builtin_path("wedding")
    assert path.is_file() and path.name == "wedding.txt"
    assert builtin_path("builtin:wedding") == path == builtin_path("wedding.txt")


def test_limit_keeps_the_first_documents() -> None:
    full = load_corpus("builtin:general")
    assert load_corpus("builtin:general", limit=5) == full[:5]
    assert load_corpus("builtin:general", limit=10_000) == full


# --- round trips ------------------------------------------------------------------------------


def test_txt_round_trip(tmp_path: Path) -> None:
    docs = ["First document.", "  Leading space is kept.", "Ünïcödé — fine 🙂"]
    path = tmp_path / "c.txt"
    path.write_text("\n".join([docs[0], "", docs[1] + "   \t", "   ", docs[2]]) + "\n\n", "utf-8")
    assert load_corpus(path) == docs
    assert load_corpus(str(path)) == docs
    assert load_corpus(path, limit=2) == docs[:2]


def test_txt_handles_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert load_corpus(path) == ["one", "two"]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    docs = ["alpha", "beta\nwith a newline", 'quote " and unicode é']
    path = tmp_path / "c.JSONL"
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)]
    lines.insert(1, "")
    lines.append(json.dumps({"text": "   "}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_corpus(path) == docs


def test_list_and_tuple_round_trip() -> None:
    docs = ["one", " two ", "three"]
    assert load_corpus(docs) == docs
    assert load_corpus(tuple(docs), limit=1) == ["one"]
    assert load_corpus(["a", "", "  ", "b"]) == ["a", "b"]


def test_list_input_is_not_mutated() -> None:
    docs = ["a", "", "b"]
    load_corpus(docs)
    assert docs == ["a", "", "b"]


# --- errors -----------------------------------------------------------------------------------


def _message(excinfo: pytest.ExceptionInfo[WorkbenchError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unknown_builtin_lists_known_names() -> None:
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus("builtin:weddings")
    message = _message(excinfo)
    assert "unknown built-in corpus 'builtin:weddings'" in message
    assert "wedding" in message and "general" in message and "neutral_prompts" in message
    with pytest.raises(WorkbenchError, match="unknown built-in"):
        builtin_path("nope")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(tmp_path / "absent.txt")
    message = _message(excinfo)
    assert "does not exist" in message and "absent.txt" in message


def test_bare_builtin_name_suggests_prefix() -> None:
    with pytest.raises(WorkbenchError, match="did you mean 'builtin:wedding'"):
        load_corpus("wedding")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(tmp_path)
    message = _message(excinfo)
    assert "folder" in message and ".txt" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(WorkbenchError, match=r"unsupported type '\.csv'.*\.jsonl"):
        load_corpus(path)


@pytest.mark.parametrize("content", ["", "\n\n   \n", "\t\n"])
def test_empty_txt(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(path)
    message = _message(excinfo)
    assert "no documents" in message and "empty.txt" in message


def test_empty_jsonl_and_list(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": ""}\n\n', encoding="utf-8")
    with pytest.raises(WorkbenchError, match="no documents"):
        load_corpus(path)
    with pytest.raises(WorkbenchError, match="no documents"):
        load_corpus([])
    with pytest.raises(WorkbenchError, match="no documents"):
        load_corpus(["", "  "])


def test_non_utf8_file_names_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(path)
    message = _message(excinfo)
    assert "not valid UTF-8" in message
    assert "offset 14" in message and "line 2" in message and "0xe9" in message
    assert "re-encode" in message


def test_non_utf8_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(WorkbenchError, match="line 2.*re-encode"):
        load_corpus(path)


def test_jsonl_missing_text_names_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(path)
    message = _message(excinfo)
    assert "line 3" in message and "'text'" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "no 'text' field"),
        ('{"text": 5}', "'text' is int"),
    ],
)
def test_jsonl_bad_lines_name_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(path)
    message = _message(excinfo)
    assert "line 2" in message and expected in message


def test_list_with_non_string() -> None:
    mixed: Any = ["fine", 3, "also fine"]  # wrong on purpose: Any lets it past the type checker
    with pytest.raises(WorkbenchError) as excinfo:
        load_corpus(mixed)
    message = _message(excinfo)
    assert "item 1" in message and "int" in message and "list of strings" in message


@pytest.mark.parametrize("spec", [5, None, {"text": "a"}, b"bytes"])
def test_unsupported_spec_type(spec: Any) -> None:
    with pytest.raises(WorkbenchError, match="cannot read a corpus"):
        load_corpus(spec)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_bad_limit(limit: Any) -> None:
    with pytest.raises(WorkbenchError, match="limit must be a positive integer"):
        load_corpus(["a"], limit=limit)


def test_limit_stops_before_a_later_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\nnot json\n', encoding="utf-8")
    assert load_corpus(path, limit=2) == ["a", "b"]


def test_a_path_with_a_line_break_is_still_a_one_line_error() -> None:
    """Found by the property tests: the echoed path carried its newline into the message."""
    from workbench.corpora import load_corpus
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError) as err:
        load_corpus("missing\nfile.txt")
    assert "\n" not in str(err.value) and "missing\\nfile.txt" in str(err.value)
