"""Coefficient sweeps batched against a plain loop (issue 5's target: at least 3x faster).

8 coefficients x 16 prompts, sampled with ActAdd's settings and the same seeds both ways:

* ``batched``: what :mod:`workbench.experiments.sweep` does, one ``generate`` call for every coefficient x
  prompt row (:func:`workbench.measure.effects.completions`, chunked at ``--batch-size`` rows);
* ``loop``: one :func:`workbench.steer.generate.generate` call per coefficient (16 rows each);
* ``plain``: the plain loop a user would write, one call per coefficient and prompt (batch 1).
  The issue's 3x target is against this one; ``loop`` is a harder baseline, shown beside it.

The same comparison is made for scoring (per-sentence perplexity of 16 sentences under the 8
coefficients: one batched pass against one pass per coefficient). Results are compared too:
rows share their sampling noise, so the batched and per-coefficient runs must give the same
texts, and both ways of scoring the same perplexities; a mismatch exits non-zero. Timings are
medians of ``--repeats`` interleaved runs, so load from other processes hits both alike.

    python benchmarks/bench_sweep.py [--model smollm2-135m] [--tokens 16] [--repeats 2] [--smoke]

``--smoke`` runs the same code on a tiny random model with 4 prompts, 4 sentences and 3 new
tokens (seconds, no targets: toy sizes say nothing about speed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.corpora import load_corpus
from workbench.measure.runs import completions, sentence_perplexities
from workbench.measure.spec import Condition, actadd_sampling
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.steer.generate import generate
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.testing import make_tiny_model
from workbench.vectors.build import from_prompts

COEFFS = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
SMOKE_ROWS, SMOKE_TOKENS = 4, 3


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_sweep: wrong result: {what}")


def _median_times(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for fn in methods.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per completion")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="rows per generate chunk")
    parser.add_argument("--layer", type=int, default=None, help="default: a fifth of the depth")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds, no targets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            torch.set_num_threads(1)  # a tiny model only loses time syncing threads
            model = load_model(str(make_tiny_model(Path(tmp) / "tiny")))
            args.tokens, args.repeats = SMOKE_TOKENS, 1
            n_rows = SMOKE_ROWS
        else:
            model = load_model(args.model)
            n_rows = 16
        run(model, args.layer, n_rows, args.tokens, args.repeats, args.batch_size, args.smoke)


def run(
    model: Model,
    layer: int | None,
    n_rows: int,
    tokens: int,
    repeats: int,
    batch_size: int,
    smoke: bool,
) -> None:
    layer = layer if layer is not None else max(1, model.n_layers // 5)
    vector = from_prompts(model, " wedding", " ", [layer])
    entry = PlanEntry(vector, 0.0)
    prompts = load_corpus("builtin:neutral_prompts", limit=n_rows)
    sentences = load_corpus("builtin:unrelated", limit=n_rows)
    settings = actadd_sampling(tokens)
    conds = [Condition(f"{c:g}", (c,)) for c in COEFFS]
    out: dict[str, list[list[str]]] = {}
    ppl: dict[str, np.ndarray] = {}

    def batched() -> None:
        out["batched"], _ = completions(
            model, [entry], conds, prompts, 1, settings, batch_size=batch_size
        )

    def loop() -> None:
        out["loop"] = [
            generate(model, prompts, SteeringPlan.of(vector, c), sampling=settings).texts
            for c in COEFFS
        ]

    def plain() -> None:
        out["plain"] = [
            [
                generate(model, [p], SteeringPlan.of(vector, c), sampling=settings).texts[0]
                for p in prompts
            ]
            for c in COEFFS
        ]

    def score_batched() -> None:
        ppl["batched"] = sentence_perplexities(
            model, [entry], conds, sentences, batch_size=batch_size
        )  # (coeffs, sentences)

    def score_loop() -> None:
        ppl["loop"] = np.concatenate(
            [
                sentence_perplexities(model, [entry], [c], sentences, batch_size=batch_size)
                for c in conds
            ]
        )  # (coeffs, sentences)

    print(
        f"model {model.name}, vector ' wedding' - ' ' at layer {layer}, {len(COEFFS)} "
        f"coefficients x {len(prompts)} prompts, {tokens} new tokens, "
        f"{torch.get_num_threads()} torch threads, median of {repeats}"
    )
    gen = _median_times({"batched": batched, "loop": loop, "plain": plain}, repeats)
    rows = len(COEFFS) * len(prompts)
    same = {
        way: sum(
            a == b
            for ra, rb in zip(out["batched"], out[way], strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        for way in ("loop", "plain")
    }
    target = "" if smoke else " (target >= 3)"
    print(
        f"generation: batched {gen['batched']:.2f} s, plain loop (batch 1) {gen['plain']:.2f} s "
        f"-> batched is {gen['plain'] / gen['batched']:.2f}x faster{target}; identical "
        f"completions {same['plain']}/{rows}"
    )
    print(
        f"            per-coefficient loop ({len(prompts)} prompts a call) {gen['loop']:.2f} s "
        f"-> batched is {gen['loop'] / gen['batched']:.2f}x faster; identical completions "
        f"{same['loop']}/{rows}"
    )
    _check(same["loop"] == rows, "batched completions differ from the per-coefficient loop's")
    score = _median_times({"batched": score_batched, "loop": score_loop}, repeats)
    agree = np.allclose(ppl["batched"], ppl["loop"], rtol=1e-4)
    print(
        f"scoring {len(sentences)} sentences: batched {score['batched']:.2f} s, loop "
        f"{score['loop']:.2f} s -> {score['loop'] / score['batched']:.2f}x; perplexities "
        f"{'agree' if agree else 'DIFFER'}"
    )
    _check(agree, "batched perplexities differ from one pass per coefficient")


if __name__ == "__main__":
    main()
