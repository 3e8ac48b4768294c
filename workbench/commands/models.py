"""``workbench models``: the model names that work here, and which are converted already."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.model.load import list_models

NAME = "models"
HELP = "list the models that work here and which are cached"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> dict[str, Any]:
    return {"models": list_models()}


def render(result: dict[str, Any]) -> str:
    lines = []
    for row in result["models"]:
        flags = ("default, " if row["default"] else "") + (
            "cached" if row["cached"] else ("available" if row["available"] else "unavailable")
        )
        lines.append(f"{row['name']:<16} [{flags}] {row['description']}")
    lines.append("Also: any local transformers folder or a path to a .gguf file.")
    return "\n".join(lines)
