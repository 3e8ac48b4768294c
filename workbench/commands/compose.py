"""``workbench compose``: do several vectors keep their effects when applied together?

Thin over :func:`workbench.experiments.compose.run_compose`. Per-vector options (``--coeff``, ``--layer``,
``--target-words``, ``--score``, ``--position``) belong to the ``--vector`` they follow; when all
of one option's values come after the last ``--vector``, they are matched to the vectors in
order instead (``--vector A --vector B --coeff 4 --coeff 2``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.commands._measure_args import (
    add_control_arguments,
    add_text_arguments,
    claimed,
    controls,
    load_vector,
    progress,
    write_claimed,
)
from workbench.errors import check
from workbench.experiments.compose import ComposeItem, run_compose
from workbench.measure.effects import parse_words, target_set
from workbench.measure.spec import build_spec
from workbench.model.load import load_model
from workbench.parse import integer, number
from workbench.steer.plan import STEER_POSITIONS
from workbench.vectors.vector import UNITS

NAME = "compose"
HELP = "apply several vectors together: retention, interference, cosine and damage"
PER_VECTOR = ("coeff", "layer", "target_words", "score", "position")


class _Tagged(argparse.Action):
    """Store ``(vectors seen so far, value)`` so a value can be matched to its ``--vector``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        seen = len(getattr(namespace, "vector", None) or [])
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((seen, values))
        setattr(namespace, self.dest, items)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: the vectors')")
    parser.add_argument("--vector", action="append", required=True, help="vector file (repeat)")
    parser.add_argument("--coeff", action=_Tagged, required=True, help="per --vector")
    parser.add_argument("--layer", action=_Tagged, help="per --vector (default: its layer)")
    parser.add_argument("--target-words", action=_Tagged, help="per --vector: W1,W2,...")
    parser.add_argument("--score", action=_Tagged, choices=("sentiment",), help="per --vector")
    parser.add_argument("--position", action=_Tagged, choices=STEER_POSITIONS, help="per --vector")
    parser.add_argument("--units", choices=UNITS, default="raw")
    parser.add_argument("--orthogonalize", action="store_true", help="Gram-Schmidt per layer")
    parser.add_argument(
        "--sampled", action="store_true", help="effect = target words per completion"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace an earlier {NAME} --out folder"
    )
    parser.add_argument("--out", default=None, help="folder for compose.json and report.html")
    add_text_arguments(parser, n_default=0)
    add_control_arguments(parser)


def assign(tagged: list[tuple[int, Any]] | None, n: int, flag: str) -> list[Any]:
    """Per-vector values of one option (see module docstring); ``None`` where not given."""
    if not tagged:
        return [None] * n
    if len(tagged) == n and all(k == n for k, _ in tagged) and n > 1:
        return [v for _, v in tagged]
    out: list[Any] = [None] * n
    for k, v in tagged:
        check(k > 0, f"{flag} {v} comes before any --vector; put it after its --vector")
        check(out[k - 1] is None, f"vector {k} got two {flag} values; give one per --vector")
        out[k - 1] = v
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    with claimed(args.out, "compose", args.overwrite) as claim:
        n = len(args.vector)
        check(n >= 2, "composition needs at least two vectors; give --vector twice")
        per = {f: assign(getattr(args, f), n, "--" + f.replace("_", "-")) for f in PER_VECTOR}
        missing = [i + 1 for i, c in enumerate(per["coeff"]) if c is None]
        check(not missing, f"vectors {missing} have no --coeff; give one --coeff per --vector")
        k, control_seed = controls(args)
        vectors = [load_vector(p) for p in args.vector]
        model = load_model(args.model or vectors[0].model)
        labels = [Path(p).name for p in args.vector]
        labels = [lb if labels.count(lb) == 1 else f"{lb}#{i + 1}" for i, lb in enumerate(labels)]
        items = []
        for i, v in enumerate(vectors):
            words = per["target_words"][i]
            items.append(
                ComposeItem(
                    vector=v,
                    coeff=number(per["coeff"][i], "--coeff"),
                    layer=None if per["layer"][i] is None else integer(per["layer"][i], "--layer"),
                    label=labels[i],
                    targets=None
                    if words is None
                    else target_set(model, parse_words(words), f"v{i + 1}"),
                    score=per["score"][i],
                    position=per["position"][i],
                )
            )
        for it in items:
            it.metric(args.sampled)  # a vector without a metric fails here, before any model run
        targets = [it.targets for it in items if it.targets is not None]
        spec = build_spec(args, targets, sentiment=any(it.score == "sentiment" for it in items))
        progress(f"composing {n} vectors on {model.name} ({k} controls each)")
        data = run_compose(
            model,
            items,
            spec,
            units=args.units,
            orthogonalize=args.orthogonalize,
            sampled=args.sampled,
            controls=k,
            control_seed=control_seed,
        )
        if claim is not None:
            data["files"] = write_claimed(claim, args.out, data)
        return data


def render(result: dict[str, Any]) -> str:
    lines = [f"Composition of {len(result['vectors'])} vectors on {result['model']}"]
    for i, v in enumerate(result["vectors"]):
        alone, comb = result["effects"]["alone"][i], result["effects"]["combined"][i]
        flag = "" if result["alone_significant"][i] else " (alone effect not distinct from 0)"
        lines.append(
            f"  {v['label']} x {v['coeff']:g} at layer {v['layer']} [{v['metric']}]: alone "
            f"{alone['value']:.3g}, combined {comb['value']:.3g}, retention "
            f"{result['retention'][i]:.3g}{flag}"
        )
    lines += [f"  {v}" for v in result.get("verdicts", [])]
    lines.append("Interference (row i with column j): ")
    lines += ["  " + " ".join(f"{x:7.3f}" for x in row) for row in result["interference"]]
    lines.append("Cosine (same layer only): ")
    lines += [
        "  " + " ".join("    n/a" if x is None else f"{x:7.3f}" for x in row)
        for row in result["cosine"]
    ]
    dmg = result["damage"]["combined"]
    if "off_target_ratio" in dmg:
        lines.append(
            f"Damage of the combination: off-target ppl ratio {dmg['off_target_ratio']['value']:.3f}"
        )
    lines += [f"Note: {x}" for x in result.get("notes", [])]
    if "files" in result:
        lines.append(f"Report: {result['files']['report']}")
    return "\n".join(lines)
