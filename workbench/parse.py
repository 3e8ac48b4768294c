"""Values typed by a user (CLI options, dashboard fields) read into numbers and settings.

Every mistake is a one-line :class:`~workbench.errors.WorkbenchError` naming the option, never a
``ValueError`` from deep inside the code that uses the value.
"""

from __future__ import annotations

import json
import math
from typing import Any

from workbench.errors import WorkbenchError, check


def number(text: str | float, flag: str) -> float:
    """``text`` as a finite float, or a one-line error naming ``flag``."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{flag} {text!r} is not a number") from None
    check(math.isfinite(x), f"{flag} {text} is not a finite number")
    return x


def integer(text: str | int, flag: str, minimum: int = 0) -> int:
    """``text`` as a whole number of at least ``minimum``, or a one-line error naming ``flag``."""
    try:
        x = int(text)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{flag} {text!r} is not a whole number") from None
    check(x >= minimum, f"{flag} must be at least {minimum}, got {x}")
    return x


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["alpha=0.5", "architecture=topk"]`` -> ``{"alpha": 0.5, "architecture": "topk"}``.

    Values are read as JSON when they parse (numbers, true/false, null), else kept as text.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        check(bool(sep) and bool(key), f"--param {item!r} is not key=value; write e.g. alpha=0.5")
        check(key not in out, f"--param {key} is given twice; give it once")
        try:
            out[key] = json.loads(text)
        except (json.JSONDecodeError, RecursionError):  # deep nesting ("[[[[...") is text too
            out[key] = text
    return out
