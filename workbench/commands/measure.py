"""``workbench measure``: effects and side effects of one vector at one coefficient, with controls.

Thin over :func:`workbench.measure.effects.measure_vector`: unsteered, steered, a norm-matched random
vector and (for prompt-made vectors) the token-injection baseline, each measure with a
bootstrap interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench.commands._measure_args import (
    add_control_arguments,
    add_effect_arguments,
    add_text_arguments,
    claimed,
    control_lines,
    controls,
    load_vector,
    words_targets,
    write_claimed,
)
from workbench.measure.effects import default_effect, measure_vector
from workbench.measure.spec import build_spec
from workbench.model.load import load_model
from workbench.parse import integer, number
from workbench.steer.plan import STEER_POSITIONS
from workbench.vectors.vector import UNITS

NAME = "measure"
HELP = "measure one vector's effect, damage and controls at one coefficient"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: the vector's)")
    parser.add_argument("--vector", required=True, help="vector file (.safetensors)")
    parser.add_argument("--coeff", required=True, help="coefficient")
    parser.add_argument("--layer", default=None, help="layer (default: the vector's)")
    parser.add_argument("--units", choices=UNITS, default="raw")
    parser.add_argument("--position", choices=STEER_POSITIONS, default=None)
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace an earlier {NAME} --out folder"
    )
    parser.add_argument("--out", default=None, help="folder for measure.json and report.html")
    add_effect_arguments(parser)
    add_text_arguments(parser)
    add_control_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with claimed(args.out, "measure", args.overwrite) as claim:
        coeff = number(args.coeff, "--coeff")
        k, control_seed = controls(args)
        layer = None if args.layer is None else integer(args.layer, "--layer")
        vector = load_vector(args.vector)
        model = load_model(args.model or vector.model)
        spec = build_spec(
            args, words_targets(model, args.target_words), sentiment=args.score == "sentiment"
        )
        effect = default_effect(spec, args.effect, args.decrease)
        data = measure_vector(
            model,
            vector,
            coeff,
            spec,
            effect,
            layer=layer,
            units=args.units,
            position=args.position,
            controls=k,
            control_seed=control_seed,
            label=Path(args.vector).name,
        )
        if claim is not None:
            data["files"] = write_claimed(claim, args.out, data)
        return data


def _line(name: str, s: dict[str, Any]) -> str:
    e = s["effect"]
    text = f"  {name:<10} effect {e['value']:.4g} [{e['low']:.4g}, {e['high']:.4g}]"
    if "damage" in s:
        d = s["damage"]
        text += f"; off-target ppl ratio {d['value']:.4g} [{d['low']:.4g}, {d['high']:.4g}]"
    kl = s["measures"].get("kl")
    if kl:
        text += f"; KL {kl['value']:.4g}"
    return text


def render(result: dict[str, Any]) -> str:
    eff = result["effect_spec"]
    lines = [
        f"{result['vector']['label']} x {result['coeff']:g} ({result['units']}) at layer "
        f"{result['layer']} on {result['model']}; effect = {eff['label']} vs unsteered",
    ]
    for name in ("steered", "random", "injection"):
        if result.get(name):
            lines.append(_line(name, result[name]))
    lines += control_lines(result.get("matched_controls"))
    top = result["steered"]["measures"].get("kl_top", [])[:5]
    if top:
        lines.append(
            "Top KL contributors: "
            + ", ".join(f"{t['token']!r} {t['contribution']:.3g}" for t in top)
        )
    lines += [f"Note: {n}" for n in result.get("notes", [])]
    if "files" in result:
        lines.append(f"Report: {result['files']['report']}")
    return "\n".join(lines)
