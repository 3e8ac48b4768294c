"""Coefficient sweeps batched against a plain loop (issue 5's target: at least 3x faster).

8 coefficients x 16 prompts, sampled with ActAdd's settings and the same seeds both ways:

* ``batched``: what :mod:`workbench.experiments.sweep` does, one ``generate`` call for every coefficient x
  prompt row (:func:`workbench.measure.effects.completions`, chunked at ``--batch-size`` rows);
* ``loop``: one :func:`workbench.steer.generate.generate` call per coefficient (16 rows each);
* ``plain``: the plain loop a user would write, one call per coefficient and prompt (batch 1).
  The issue's 3x target is against this one; ``loop`` is a harder baseline, shown beside it.

The same comparison is made for scoring (per-sentence perplexity of 16 sentences under the 8
coefficients: one batched pass against one pass per coefficient). Completions are compared too:
rows share their sampling noise, so both ways should give the same texts. Timings are medians of
``--repeats`` interleaved runs, so load from other processes hits both alike.

    python benchmarks/bench_sweep.py [--model smollm2-135m | --tiny] [--tokens 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.corpora import load_corpus
from workbench.measure.effects import Condition, actadd_sampling, completions, sentence_perplexities
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.steer.generate import generate
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.build import from_prompts

COEFFS = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


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
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model instead")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per completion")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="rows per generate chunk")
    parser.add_argument("--layer", type=int, default=None, help="default: a fifth of the depth")
    args = parser.parse_args()

    if args.tiny:
        from workbench.testing import make_tiny_model

        model: Model = load_model(str(make_tiny_model(Path(tempfile.mkdtemp()), arch="llama")))
    else:
        model = load_model(args.model)
    layer = args.layer if args.layer is not None else max(1, model.n_layers // 5)
    vector = from_prompts(model, " wedding", " ", [layer])
    entry = PlanEntry(vector, 0.0)
    prompts = load_corpus("builtin:neutral_prompts", limit=16)
    sentences = load_corpus("builtin:unrelated", limit=16)
    settings = actadd_sampling(args.tokens)
    conds = [Condition(f"{c:g}", (c,)) for c in COEFFS]
    out: dict[str, list[list[str]]] = {}

    def batched() -> None:
        out["batched"], _ = completions(
            model, [entry], conds, prompts, 1, settings, batch_size=args.batch_size
        )

    def loop() -> None:
        out["loop"] = [
            generate(
                model,
                prompts,
                SteeringPlan.of(vector, c),
                n=1,
                max_new_tokens=args.tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                freq_penalty=settings.freq_penalty,
                seed=settings.seed,
            ).texts
            for c in COEFFS
        ]

    def plain() -> None:
        out["plain"] = [
            [
                generate(
                    model,
                    [p],
                    SteeringPlan.of(vector, c),
                    n=1,
                    max_new_tokens=args.tokens,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    freq_penalty=settings.freq_penalty,
                    seed=settings.seed,
                ).texts[0]
                for p in prompts
            ]
            for c in COEFFS
        ]

    def score_batched() -> None:
        sentence_perplexities(model, [entry], conds, sentences, batch_size=args.batch_size)

    def score_loop() -> None:
        for c in conds:
            sentence_perplexities(model, [entry], [c], sentences, batch_size=args.batch_size)

    print(
        f"model {model.name}, vector ' wedding' - ' ' at layer {layer}, {len(COEFFS)} "
        f"coefficients x {len(prompts)} prompts, {args.tokens} new tokens, "
        f"{torch.get_num_threads()} torch threads, median of {args.repeats}"
    )
    gen = _median_times({"batched": batched, "loop": loop, "plain": plain}, args.repeats)
    same = sum(
        a == b
        for ra, rb in zip(out["batched"], out["loop"], strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    print(
        f"generation: batched {gen['batched']:.2f} s, plain loop (batch 1) {gen['plain']:.2f} s "
        f"-> batched is {gen['plain'] / gen['batched']:.2f}x faster (target >= 3)"
    )
    print(
        f"            per-coefficient loop (16 prompts a call) {gen['loop']:.2f} s -> batched is "
        f"{gen['loop'] / gen['batched']:.2f}x faster; identical completions "
        f"{same}/{len(COEFFS) * len(prompts)}"
    )
    score = _median_times({"batched": score_batched, "loop": score_loop}, args.repeats)
    print(
        f"scoring {len(sentences)} sentences: batched {score['batched']:.2f} s, loop "
        f"{score['loop']:.2f} s -> {score['loop'] / score['batched']:.2f}x"
    )


if __name__ == "__main__":
    main()
