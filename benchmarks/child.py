"""Run a benchmark script's own ``main`` in a fresh process (for clean memory numbers).

Shared by the benchmarks that measure peak memory (``bench_capture``, ``bench_dictionaries``).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def run_child(
    script: str, main: Callable[[list[str]], None], args: list[str], smoke: bool
) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh process and return the JSON line it prints last.

    In smoke mode the same arguments run ``main`` in this process instead: the imports alone cost
    a fresh process seconds, and toy sizes say nothing about memory anyway.
    """
    if smoke:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main(args)
        text = printed.getvalue()
    else:
        done = subprocess.run(
            [sys.executable, script, *args], check=True, capture_output=True, text=True
        )
        text = done.stdout
    row: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return row
