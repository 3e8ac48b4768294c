"""One writer for every run's outputs: its JSON, its HTML report and (sweeps) CSV and plots.

``workbench measure``, ``sweep``, ``compose`` and ``demo`` (and the API) all save through
:func:`write_run`, so a run folder always looks the same: ``<kind>.json`` beside ``report.html``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.errors import check
from workbench.experiments.sweep_files import write_rows_csv
from workbench.io import write_json
from workbench.report.html import KINDS, write_report
from workbench.report.plots import write_sweep_plots


def write_run(folder: str | os.PathLike[str], data: dict[str, Any]) -> dict[str, str]:
    """Write ``data`` (a run JSON with ``kind`` in sweep, compose, measure, demo) to ``folder``.

    Returns the written files by role (``json``, ``report``; for sweeps also ``csv`` and
    ``plots``). Each file is written atomically.

    Example:
        >>> files = write_run("runs/sweep", run_sweep(model, vec, cfg, spec, effect))  # doctest: +SKIP
        >>> files["report"]                                                          # doctest: +SKIP
        'runs/sweep/report.html'
    """
    kind = str(data.get("kind"))
    check(kind in KINDS, f"not a workbench run JSON (kind {kind!r}); expected one of {KINDS}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{kind}.json", data)
    files = {"json": str(out / f"{kind}.json")}
    if kind == "sweep":
        write_rows_csv(out / "rows.csv", data["rows"])
        files["csv"] = str(out / "rows.csv")
        files.update(write_sweep_plots(data, out / "plots"))
    files["report"] = str(write_report(data, out / "report.html"))
    return files
