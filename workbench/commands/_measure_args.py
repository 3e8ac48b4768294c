"""Options shared by ``workbench sweep``, ``measure`` and ``compose``: what to measure and on
which texts. Numbers are parsed here (not by argparse) so a bad value is a one-line error."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import check
from workbench.experiments.overshoot import OvershootThresholds
from workbench.measure.controls import CONTROL_WORDS, DEFAULT_CONTROLS, check_controls
from workbench.measure.effects import (
    DEFAULT_NEUTRAL,
    DEFAULT_OFF_TARGET,
    DEFAULT_PROMPTS,
    EFFECT_KINDS,
    Targets,
    parse_words,
    target_set,
)
from workbench.model.load import Model
from workbench.outputs import Output, claim_output
from workbench.parse import integer, number
from workbench.report.write import write_run
from workbench.steer.sampling import ACTADD
from workbench.vectors.vector import SteeringVector


def load_vector(path: str) -> SteeringVector:
    check(Path(path).is_file(), f"vector file not found: {path} (check the path)")
    return SteeringVector.load(path)


def add_text_arguments(parser: argparse.ArgumentParser, *, n_default: int = 4) -> None:
    """Prompts, text sets, samples and sampling settings."""
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help="prompts to continue")
    parser.add_argument("--n-prompts", default="8", help="use the first N prompts (default 8)")
    parser.add_argument(
        "--on-target", default=None, help="on-target sentences (perplexity ratio, lower = effect)"
    )
    parser.add_argument(
        "--off-target",
        default=DEFAULT_OFF_TARGET,
        help=f"off-target sentences ({DEFAULT_OFF_TARGET})",
    )
    parser.add_argument("--n-sentences", default="16", help="sentences used per text set")
    parser.add_argument("--neutral", default=DEFAULT_NEUTRAL, help="prompts for next-token KL")
    parser.add_argument("--n-neutral", default="16", help="neutral prompts used (default 16)")
    parser.add_argument("--n", default=str(n_default), help="completions per prompt (0: none)")
    parser.add_argument("--max-new-tokens", default="24")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--temperature", default=str(ACTADD["temperature"]))
    parser.add_argument("--top-p", default=str(ACTADD["top_p"]))
    parser.add_argument("--freq-penalty", default=str(ACTADD["freq_penalty"]))
    parser.add_argument("--batch-size", default="32", help="rows per scoring batch")


def add_effect_arguments(parser: argparse.ArgumentParser) -> None:
    """One vector's effect: target words, sentiment, on-target text; which is primary."""
    parser.add_argument("--target-words", default=None, help="comma-separated target words")
    parser.add_argument("--score", choices=("sentiment",), default=None, help="VADER sentiment")
    parser.add_argument(
        "--effect",
        choices=EFFECT_KINDS,
        default=None,
        help="which measure is the effect (default: the first of target_words, target_logprob, "
        "sentiment, on_target that is measured)",
    )
    parser.add_argument(
        "--decrease", action="store_true", help="the wanted effect lowers the measure"
    )


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Matched controls: how many, and the seed that draws them."""
    parser.add_argument(
        "--controls",
        default=str(DEFAULT_CONTROLS),
        help=f"matched controls per vector (default {DEFAULT_CONTROLS}; 0: none): control-word "
        f"vectors for prompt pairs (from {len(CONTROL_WORDS)} built-in words), norm-matched "
        "random vectors otherwise",
    )
    parser.add_argument("--control-seed", default="0", help="seed that draws the controls")


def controls(args: argparse.Namespace) -> tuple[int, int]:
    """``(--controls, --control-seed)`` checked."""
    k = check_controls(integer(args.controls, "--controls", 0))
    return k, integer(args.control_seed, "--control-seed", 0)


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-ppl-ratio", default="1.2", help="damage: off-target ppl ratio above")
    parser.add_argument(
        "--min-distinct-ratio", default="0.8", help="damage: distinct-2 / unsteered below"
    )


def thresholds(args: argparse.Namespace) -> OvershootThresholds:
    return OvershootThresholds(
        max_ppl_ratio=number(args.max_ppl_ratio, "--max-ppl-ratio"),
        min_distinct_ratio=number(args.min_distinct_ratio, "--min-distinct-ratio"),
    )


def words_targets(model: Model, text: str | None, name: str = "target") -> list[Targets]:
    """``--target-words`` as a one-element target list (empty without the option)."""
    return [] if text is None else [target_set(model, parse_words(text), name)]


def progress(msg: str) -> None:
    """Progress lines go to stderr, so ``--json`` output stays one object on stdout."""
    print(msg, file=sys.stderr, flush=True)


def control_lines(matched: dict[str, Any] | None) -> list[str]:
    """The matched controls in words: the effect's rank and the specificity verdict."""
    if not matched:
        return []
    lines = []
    eff = matched.get("effect") or {}
    if matched.get("k") and eff.get("vector") is not None:
        lines.append(
            f"  vs {matched['k']} {matched['kind']} controls on {eff['measure']}: vector "
            f"{eff['vector']:.4g}, controls {', '.join(f'{c:.3g}' for c in eff['controls'])} "
            f"(beats {eff['beats']} of {len(eff['controls'])})"
        )
    if matched.get("specificity"):
        lines.append("Specificity: " + matched["specificity"]["verdict"])
    return lines


@contextlib.contextmanager
def claimed(out: str | None, kind: str, overwrite: bool) -> Iterator[Output | None]:
    """The run folder ``--out`` claimed under the output policy (None without ``--out``),
    before any work starts; released after the block."""
    if out is None:
        yield None
        return
    with claim_output(out, kind=kind, overwrite=overwrite) as claim:
        yield claim


def write_claimed(claim: Output, out: str, data: dict[str, Any]) -> dict[str, str]:
    """Write the run (:func:`~workbench.report.write.write_run`) to a temporary folder renamed
    onto ``out``; the written files by role, at their final paths."""
    with claim.staged() as tmp:
        files = write_run(tmp, data)
    return {k: str(Path(out) / Path(v).relative_to(tmp)) for k, v in files.items()}
