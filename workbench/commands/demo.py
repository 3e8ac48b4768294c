"""``workbench demo``: the whole pipeline on the embedded model (what ``make demo`` runs).

Thin over :func:`workbench.demo.run_demo`: capture, PCA and SAE, discovery, a prompt-pair vector
with its random control, a sweep with overshoot marked, a composition, and the HTML report.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from workbench.demo import run_demo
from workbench.model.load import DEFAULT_MODEL

NAME = "demo"
HELP = "run the whole pipeline on the embedded model and write an HTML report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (for tests)")


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_demo(args.model, args.out, quick=args.quick, log=_progress)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Demo finished in {result['total_seconds']}s ({result['total_cpu_seconds']}s of CPU) "
        f"on {result['model']}.",
        "Findings:",
    ]
    lines += [f"  - {f}" for f in result.get("findings", [])]
    lines += [f"Note: {n}" for n in result.get("notes", [])]
    lines.append(f"Report: {result['files']['report']}")
    lines.append(f"JSON:   {result['files']['json']}")
    return "\n".join(lines)
