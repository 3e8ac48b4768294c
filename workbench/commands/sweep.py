"""``workbench sweep``: effect and damage over coefficients (and layers), overshoot marked.

Thin over :func:`workbench.experiments.sweep.run_sweep`; writes ``sweep.json`` (the source of truth),
``rows.csv``, ``plots/`` and ``report.html`` under ``--out``. Rows are kept per finished layer,
so an interrupted sweep continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from workbench.activations.ray_session import connect
from workbench.commands._measure_args import (
    add_control_arguments,
    add_effect_arguments,
    add_text_arguments,
    add_threshold_arguments,
    control_lines,
    controls,
    load_vector,
    progress,
    thresholds,
    words_targets,
)
from workbench.experiments.sweep import (
    SweepConfig,
    claim_sweep,
    parse_coeffs,
    parse_layers,
    run_sweep,
)
from workbench.measure.effects import default_effect
from workbench.measure.spec import build_spec
from workbench.model.load import load_model
from workbench.parse import integer
from workbench.report.write import write_run
from workbench.steer.plan import STEER_POSITIONS
from workbench.vectors.vector import UNITS

NAME = "sweep"
HELP = "sweep coefficients (and layers) of a vector: effect, damage, overshoot, controls"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: the vector's)")
    parser.add_argument("--vector", required=True, help="vector file (.safetensors)")
    parser.add_argument("--coeffs", required=True, help="comma-separated, e.g. 0,1,2,4,8,16")
    parser.add_argument("--layers", default=None, help="comma-separated; the vector is rebuilt")
    parser.add_argument("--units", choices=UNITS, default="raw", help="coefficient units")
    parser.add_argument("--position", choices=STEER_POSITIONS, default=None, help="where to add")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished sweep")
    parser.add_argument("--attention-prompts", default="4", help="prompts for the attention check")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run each layer as a Ray task (pip install -e .[ray]): alone for a local "
        "instance, auto or HOST:PORT for a cluster started with `ray start --head`",
    )
    add_effect_arguments(parser)
    add_text_arguments(parser)
    add_threshold_arguments(parser)
    add_control_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    with claim_sweep(args.out, overwrite=args.overwrite, resume=args.resume):
        coeffs = parse_coeffs(args.coeffs)
        layers = None if args.layers is None else parse_layers(args.layers)
        k, control_seed = controls(args)
        config = SweepConfig(
            coeffs=coeffs,
            layers=layers,
            units=args.units,
            position=args.position,
            thresholds=thresholds(args),
            attention_prompts=integer(args.attention_prompts, "--attention-prompts", 0),
            controls=k,
            control_seed=control_seed,
        )
        if args.ray is not None:  # before the model loads: a bad address fails at once
            connect(args.ray)
        vector = load_vector(args.vector)
        model = load_model(args.model or vector.model)
        spec = build_spec(
            args, words_targets(model, args.target_words), sentiment=args.score == "sentiment"
        )
        effect = default_effect(spec, args.effect, args.decrease)
        data = run_sweep(
            model,
            vector,
            config,
            spec,
            effect,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            label=Path(args.vector).name,
            log=progress,
            ray=args.ray,
        )
        out = Path(args.out)
        data["files"] = {**write_run(out, data), "plots": str(out / "plots")}
        data["elapsed_s"] = round(time.perf_counter() - t0, 2)
        return data


def render(result: dict[str, Any]) -> str:
    eff = result["effect"]
    lines = [
        f"Sweep of {result['vector']['label']} on {result['model']} "
        f"({len(result['rows'])} rows in {result['elapsed_s']}s)",
        f"Effect: {eff['label']} ({'higher' if eff['direction'] > 0 else 'lower'} is better); "
        "damage: off-target perplexity ratio",
    ]
    for o in result["overshoot"]:
        lines.append(
            f"  layer {o['layer']}: onset {o['onset']}, best {o['best']}, breakdown "
            f"{o['breakdown']} - {o['diagnostics']['why']}"
        )
    for c in result["controls"]["by_layer"]:
        parts = [f"vector {c['vector']['effect']['value']:.3g}"]
        parts.append(f"random {c['random']['effect']['value']:.3g}")
        if c.get("injection"):
            parts.append(f"injection {c['injection']['effect']['value']:.3g}")
        lines.append(f"  controls at layer {c['layer']}, coeff {c['coeff']:g}: " + ", ".join(parts))
        lines += ["  " + line for line in control_lines(c.get("matched"))]
    lines += [f"Note: {n}" for n in result.get("notes", [])]
    lines.append(f"Report: {result['files']['report']}")
    return "\n".join(lines)
