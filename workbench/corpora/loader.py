"""Load a corpus (a list of short documents) from a built-in set, a file, or a Python list.

A corpus spec is one of:

* ``"builtin:NAME"``: a text set shipped in ``workbench/corpora/data/NAME.txt``
  (see :func:`list_builtin`);
* a path to a ``.txt`` file, one document per line;
* a path to a ``.jsonl`` file, one JSON object with a ``"text"`` field per line;
* a list or tuple of strings, one document each.

Blank documents are skipped in every case, so a corpus is always a list of non-blank strings in
source order. Files are read line by line, so ``limit`` stops early on a large file.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Generator, Sequence
from pathlib import Path

from workbench.errors import WorkbenchError, check

BUILTIN_PREFIX = "builtin:"
DATA_DIR = Path(__file__).resolve().parent / "data"

# One line per built-in set; list_builtin() appends the document count.
_DESCRIPTIONS: dict[str, str] = {
    "general": "varied short passages on many topics and styles, for capture and dictionaries",
    "loving": "affectionate statements addressed to 'you'; contrast with hateful",
    "hateful": "hostile, angry statements at 'you' and things, no slurs; contrast with loving",
    "wedding": "sentences about weddings: brides, vows, ceremonies, receptions",
    "unrelated": "everyday sentences on topics unrelated to weddings; contrast with wedding",
    "formal": "formal-register statements, line-aligned with casual",
    "casual": "casual-register versions of the formal lines, same content",
    "happy": "cheerful, joyful sentences; contrast with sad",
    "sad": "sorrowful, gloomy sentences on similar scenes; contrast with happy",
    "sports": "sentences about sport: matches, athletes, races",
    "cooking": "cooking instructions and kitchen technique",
    "neutral_prompts": "short neutral prompt openings for measuring side effects of steering",
}

_SUPPORTED = ".txt or .jsonl"


def _known_names() -> str:
    return ", ".join(sorted(_DESCRIPTIONS))


def builtin_path(name: str) -> Path:
    """Return the file behind ``builtin:NAME``; ``name`` may carry the prefix or a ``.txt``."""
    bare = name.removeprefix(BUILTIN_PREFIX).removesuffix(".txt")
    check(
        bare in _DESCRIPTIONS,
        f"unknown built-in corpus {name!r}; use one of: {_known_names()}",
    )
    return DATA_DIR / f"{bare}.txt"


def list_builtin() -> dict[str, str]:
    """Return ``{name: "description (N documents)"}`` for every built-in corpus, sorted by name.

    Example::

        >>> list_builtin()["wedding"]
        'sentences about weddings: brides, vows, ceremonies, receptions (66 documents)'
    """
    out: dict[str, str] = {}
    for name in sorted(_DESCRIPTIONS):
        count = sum(1 for _ in _iter_txt(builtin_path(name)))
        out[name] = f"{_DESCRIPTIONS[name]} ({count} documents)"
    return out


def load_corpus(
    spec: str | os.PathLike[str] | Sequence[str], *, limit: int | None = None
) -> list[str]:
    """Load the documents of a corpus, in source order, skipping blank ones.

    Args:
        spec: ``"builtin:NAME"``, a path to a ``.txt`` / ``.jsonl`` file, or a list or tuple of
            strings.
        limit: keep at most this many documents (the first ones); ``None`` keeps all.

    Raises:
        WorkbenchError: for an unknown built-in, a missing file, a folder, an unsupported file
            type, a file that is not UTF-8, a bad JSONL line, a list holding a non-string, or a
            corpus with no non-blank documents.

    Example::

        >>> load_corpus("builtin:wedding", limit=2)  # doctest: +ELLIPSIS
        ["The bride walked slowly down the aisle...", 'The couple exchanged vows...']
        >>> load_corpus(["first document", "", "second document"])
        ['first document', 'second document']
    """
    if limit is not None:
        check(
            isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1,
            f"corpus limit must be a positive integer or None, got {limit!r}; "
            "pass limit=None to keep every document",
        )
    docs: Generator[str, None, None]
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        label = f"corpus {spec!r}"
        docs = _iter_txt(builtin_path(spec))
    elif isinstance(spec, (str, os.PathLike)):
        path = _resolve_file(Path(spec).expanduser())
        label = f"corpus file {path}"
        docs = _iter_jsonl(path) if path.suffix.lower() == ".jsonl" else _iter_txt(path)
    elif isinstance(spec, (list, tuple)):
        label = f"corpus list of {len(spec)} items"
        docs = _iter_list(spec)
    else:
        raise WorkbenchError(
            f"cannot read a corpus from type {type(spec).__name__}; pass 'builtin:NAME', "
            f"a path to a {_SUPPORTED} file, or a list of strings"
        )
    out: list[str] = []
    try:
        for doc in docs:
            out.append(doc)
            if limit is not None and len(out) >= limit:
                break
    finally:
        docs.close()  # stopping early must still close the file now, not at garbage collection
    check(
        bool(out),
        f"{label} has no documents (everything is blank); give it at least one non-blank document",
    )
    return out


def _resolve_file(path: Path) -> Path:
    """Check that ``path`` is an existing corpus file of a supported type."""
    if not path.exists():
        hint = ""
        if path.stem in _DESCRIPTIONS and not path.parent.parts:
            hint = f" (did you mean '{BUILTIN_PREFIX}{path.stem}'?)"
        raise WorkbenchError(
            f"corpus file {path} does not exist{hint}; check the path, or use "
            f"'{BUILTIN_PREFIX}NAME' for one of: {_known_names()}"
        )
    check(
        not path.is_dir(),
        f"corpus path {path} is a folder; pass a {_SUPPORTED} file inside it instead",
    )
    check(
        path.suffix.lower() in (".txt", ".jsonl"),
        f"corpus file {path} has unsupported type {path.suffix or '(no extension)'!r}; "
        f"convert it to {_SUPPORTED} (one document per line)",
    )
    return path


def _iter_lines(path: Path) -> Generator[tuple[int, str], None, None]:
    """Yield ``(line number, decoded line without its newline)``, failing clearly on bad UTF-8."""
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
                start += len(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.start + 1].hex()
                raise WorkbenchError(
                    f"corpus file {path} is not valid UTF-8 (byte 0x{bad} at offset "
                    f"{start + e.start}, line {lineno}); re-encode it as UTF-8, "
                    f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}"
                ) from None
            yield lineno, text.rstrip("\r\n")


def _iter_txt(path: Path) -> Generator[str, None, None]:
    for _, line in _iter_lines(path):
        doc = line.rstrip()
        if doc.strip():
            yield doc


def _iter_jsonl(path: Path) -> Generator[str, None, None]:
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkbenchError(
                f"line {lineno} of {path} is not valid JSON ({e.msg}); "
                'write one object per line, like {"text": "..."}'
            ) from None
        check(
            isinstance(record, dict) and "text" in record,
            f"line {lineno} of {path} has no 'text' field; "
            'write one object per line, like {"text": "..."}',
        )
        text = record["text"]
        check(
            isinstance(text, str),
            f"line {lineno} of {path}: 'text' is {type(text).__name__}, not a string; "
            "store each document as a JSON string",
        )
        if text.strip():
            yield text


def _iter_list(items: Sequence[object]) -> Generator[str, None, None]:
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise WorkbenchError(
                f"corpus list item {i} is {type(item).__name__}, not str; "
                "pass a list of strings, one document each"
            )
        if item.strip():
            yield item


def load_text_set(spec: str | Sequence[str], what: str, limit: int | None = None) -> list[str]:
    """The texts of one option (a file, ``builtin:NAME`` or a list), with every error a one-line
    message naming ``what`` (e.g. ``"positive text set"``, ``"--off-target"``).

    >>> load_text_set("builtin:wedding", "--on-target", limit=1)  # doctest: +ELLIPSIS
    ["The bride walked slowly down the aisle on her father's arm..."]
    >>> load_text_set("", "--on-target")
    Traceback (most recent call last):
    workbench.errors.WorkbenchError: --on-target is empty: give a file or builtin:NAME
    """
    check(limit is None or limit >= 1, f"the {what} limit must be at least 1, got {limit}")
    if isinstance(spec, str):
        check(bool(spec.strip()), f"{what} is empty: give a file or builtin:NAME")
    else:
        check(len(spec) > 0, f"{what} is empty: give at least one text")
    try:
        return load_corpus(spec, limit=limit)
    except WorkbenchError as e:
        raise WorkbenchError(f"{what}: {e}") from None
