"""Files of a sweep folder: the settings, rows kept per finished layer, and the outputs.

``config.json`` holds the sweep's settings (a resumed sweep must match them); ``rows.jsonl``
gets one line per finished layer, flushed to disk at once, so an interrupted sweep keeps what
it did (a line torn by a crash mid-write is ignored). The outputs (``sweep.json``, ``rows.csv``
via :func:`write_rows_csv`, ``plots/``, ``report.html``) are written by
:func:`workbench.report.write_run`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from workbench.errors import check
from workbench.io import atomic_path, read_json, write_json


def read_done(path: Path) -> dict[int, dict[str, Any]]:
    """Finished layers of ``rows.jsonl``; a torn last line (interrupted write) is dropped."""
    done: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[int(rec["layer"])] = rec
    return done


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one finished layer's record and make sure it reached the disk."""
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def prepare(out: Path, signature: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready: new, resumable with the same settings, or overwritten on request."""
    config, rows = out / "config.json", out / "rows.jsonl"
    if config.exists() or rows.exists():
        if resume and config.exists():
            old = read_json(config, "sweep config")
            check(
                old == signature,
                f"{out} holds a sweep with other settings; use another --out or --overwrite",
            )
            return
        check(
            overwrite,
            f"{out} already holds a sweep; pass --resume to continue it or --overwrite",
        )
        rows.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(config, signature)


def write_rows_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Scalar columns of the sweep rows as CSV (intervals as ``_low``/``_high`` columns)."""
    flat: list[dict[str, Any]] = []
    for row in rows:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if k.endswith("_ci") and isinstance(v, list) and len(v) == 2:
                out[f"{k.removesuffix('_ci')}_low"], out[f"{k.removesuffix('_ci')}_high"] = v
            elif not isinstance(v, (list, dict)):
                out[k] = v
        flat.append(out)
    columns: list[str] = []
    for r in flat:
        columns += [k for k in r if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
