"""Inputs for what to measure (prompts, text sets, samples), shared by overshoot and compose.

:func:`measure_inputs` draws the fields and returns a :class:`MeasureOptions` (plain values, so
results can be cached by them); :func:`measure_spec` turns it into the library's
:class:`~workbench.measure.effects.MeasureSpec` through the very function ``workbench sweep`` and
``workbench compose`` use for their ``--prompts/--off-target/--n ...`` options.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import streamlit as st

from workbench.measure.controls import CONTROL_WORDS, DEFAULT_CONTROLS
from workbench.measure.effects import (
    DEFAULT_NEUTRAL,
    DEFAULT_OFF_TARGET,
    DEFAULT_PROMPTS,
    MeasureSpec,
    Targets,
)
from workbench.measure.spec import build_spec
from workbench.steer.sampling import ACTADD


class MeasureOptions(NamedTuple):
    """The text sets and sample counts of a measurement (see ``workbench sweep --help``)."""

    prompts: str = DEFAULT_PROMPTS
    n_prompts: int = 4
    n: int = 2
    max_new_tokens: int = 24
    seed: int = 0
    off_target: str = DEFAULT_OFF_TARGET
    on_target: str = ""
    n_sentences: int = 8
    neutral: str = DEFAULT_NEUTRAL
    n_neutral: int = 8
    controls: int = DEFAULT_CONTROLS


def measure_inputs(key: str, *, on_target: bool = False) -> MeasureOptions:
    """Fields for the texts and samples (small defaults so a CPU answers in seconds)."""
    d = MeasureOptions()
    with st.expander("Texts and samples", expanded=False):
        c1, c2, c3, c4 = st.columns(4)
        prompts = c1.text_input("Prompts", d.prompts, key=f"{key}_prompts")
        n_prompts = c2.number_input("Prompts used", 1, 500, d.n_prompts, key=f"{key}_np")
        n = c3.number_input("Completions per prompt", 0, 64, d.n, key=f"{key}_n")
        tokens = c4.number_input("New tokens", 1, 256, d.max_new_tokens, key=f"{key}_tok")
        c1, c2, c3, c4 = st.columns(4)
        off = c1.text_input("Off-target text (damage)", d.off_target, key=f"{key}_off")
        on = c2.text_input("On-target text", "", key=f"{key}_on") if on_target else ""
        n_sent = c3.number_input("Sentences used", 1, 500, d.n_sentences, key=f"{key}_ns")
        seed = c4.number_input("Seed", 0, 2**31 - 1, d.seed, key=f"{key}_seed")
        c1, c2, c3 = st.columns(3)
        neutral = c1.text_input("Neutral prompts (KL)", d.neutral, key=f"{key}_neu")
        n_neutral = c2.number_input("Neutral prompts used", 1, 500, d.n_neutral, key=f"{key}_nn")
        controls = c3.number_input(
            "Matched controls",
            0,
            len(CONTROL_WORDS),
            d.controls,
            key=f"{key}_ctl",
            help="control-word vectors (prompt pairs) or random vectors built the same way; "
            "0 switches them off",
        )
    return MeasureOptions(
        prompts=prompts,
        n_prompts=int(n_prompts),
        n=int(n),
        max_new_tokens=int(tokens),
        seed=int(seed),
        off_target=off,
        on_target=on,
        n_sentences=int(n_sent),
        neutral=neutral,
        n_neutral=int(n_neutral),
        controls=int(controls),
    )


def measure_spec(
    opts: MeasureOptions, targets: list[Targets], *, sentiment: bool = False
) -> MeasureSpec:
    """The library's :class:`MeasureSpec` for ``opts``, built by the same function that builds
    it from ``workbench sweep``/``compose``'s ``--prompts/--off-target/--n ...`` options."""
    args = argparse.Namespace(
        prompts=opts.prompts,
        n_prompts=opts.n_prompts,
        on_target=opts.on_target.strip() or None,
        off_target=opts.off_target.strip() or None,
        n_sentences=opts.n_sentences,
        neutral=opts.neutral,
        n_neutral=opts.n_neutral,
        n=opts.n,
        max_new_tokens=opts.max_new_tokens,
        seed=opts.seed,
        temperature=ACTADD["temperature"],
        top_p=ACTADD["top_p"],
        freq_penalty=ACTADD["freq_penalty"],
        batch_size=32,
    )
    return build_spec(args, targets, sentiment=sentiment)
