"""``workbench steer``: unsteered and steered completions of a prompt, side by side.

Thin over :func:`workbench.steer.generate.side_by_side`: one or more ``--vector FILE --coeff C``
pairs make the plan, sampled under identical seeds for both columns (ActAdd's settings by
default).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.load import load_model
from workbench.steer.generate import side_by_side
from workbench.steer.plan import STEER_POSITIONS, PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD, Sampling
from workbench.vectors.vector import UNITS, SteeringVector

NAME = "steer"
HELP = "compare unsteered and steered completions of a prompt under identical seeds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: the vector's)")
    parser.add_argument("--vector", action="append", required=True, help="vector file (repeatable)")
    # Parsed later (not with type=float) so a bad value gets the one-line workbench error.
    parser.add_argument("--coeff", action="append", required=True, help="one per --vector")
    parser.add_argument(
        "--layer", action="append", type=int, default=None, help="apply at this layer (per vector)"
    )
    parser.add_argument(
        "--position",
        action="append",
        choices=STEER_POSITIONS,
        default=None,
        help="front|middle|back|all, once for all vectors or once per vector "
        "(default: front for prompt-aligned vectors, all for directions)",
    )
    parser.add_argument("--units", choices=UNITS, default="raw", help="coefficient units")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--n", type=int, default=4, help="completions per column")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=ACTADD["temperature"])
    parser.add_argument("--top-p", type=float, default=ACTADD["top_p"])
    parser.add_argument("--freq-penalty", type=float, default=ACTADD["freq_penalty"])
    parser.add_argument("--backend", choices=("hf", "tl"), default=None)


def _per_vector(values: list[Any] | None, n: int, flag: str) -> list[Any]:
    if values is None:
        return [None] * n
    if len(values) == 1 and flag == "--position":
        return values * n
    if len(values) != n:
        raise WorkbenchError(
            f"{len(values)} {flag} values for {n} --vector files; give one {flag} per --vector"
        )
    return values


def _coeff(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise WorkbenchError(f"--coeff {text!r} is not a number") from None


def build_plan(args: argparse.Namespace) -> SteeringPlan:
    """The plan described by the ``--vector/--coeff/--layer/--position/--units`` options."""
    n = len(args.vector)
    if len(args.coeff) != n:
        raise WorkbenchError(
            f"{n} --vector files but {len(args.coeff)} --coeff values; give one --coeff per "
            "--vector"
        )
    layers = _per_vector(args.layer, n, "--layer")
    positions = _per_vector(args.position, n, "--position")
    entries = []
    for path, coeff, layer, position in zip(
        args.vector, args.coeff, layers, positions, strict=True
    ):
        if not Path(path).is_file():
            raise WorkbenchError(f"vector file not found: {path} (check the path)")
        vector = SteeringVector.load(path)
        entries.append(
            PlanEntry(
                vector,
                _coeff(coeff),
                layers=None if layer is None else [layer],
                position=position,
                units=args.units,
                label=Path(path).name,
            )
        )
    return SteeringPlan(entries)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.prompt.strip():
        raise WorkbenchError("the prompt is empty; give --prompt some text to continue")
    if args.n < 1:
        raise WorkbenchError(f"--n must be at least 1, got {args.n}")
    plan = build_plan(args)
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        freq_penalty=args.freq_penalty,
        seed=args.seed,
    )
    model = load_model(args.model or plan.entries[0].vector.model)
    result = side_by_side(
        model, args.prompt, plan, n=args.n, sampling=sampling, backend=args.backend
    )
    result["model"] = model.name
    return result


def _describe(entry: dict[str, Any]) -> str:
    layers = ",".join(str(x) for x in entry["layers"])
    units = "" if entry["units"] == "raw" else f" ({entry['units']} units)"
    return (
        f"{entry['label']} x {entry['coeff']}{units} at layer {layers} "
        f"({entry['site']}, {entry['position']})"
    )


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"Prompt: {result['prompt']}",
        "Plan:   " + "; ".join(_describe(e) for e in result["plan"]),
        f"Sampling: seed {s['seed']}, temperature {s['temperature']}, top-p {s['top_p']}, "
        f"frequency penalty {s['freq_penalty']}, {s['max_new_tokens']} new tokens",
    ]
    lines += [f"Note: {note}" for note in result.get("notes", [])]
    for k, (plain, steered) in enumerate(zip(result["unsteered"], result["steered"], strict=True)):
        lines.append(f"\n--- sample {k + 1} ---")
        for name, text in (("unsteered", plain), ("steered", steered)):
            body = " ".join(text.split()) or "(empty)"
            wrapped = textwrap.wrap(body, width=88) or [""]
            lines.append(f"  {name + ':':<11}" + wrapped[0])
            lines += [" " * 13 + w for w in wrapped[1:]]
    return "\n".join(lines)
