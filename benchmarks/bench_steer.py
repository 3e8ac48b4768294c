"""Steered generation speed against transformers' own ``generate`` (issue 4's targets).

Measured in one run on the default model, 64 new tokens, KV cache on, EOS ignored so every run
makes the same number of tokens, at batch 1 and batch 8:

* ``hf generate``      transformers' own unsteered ``model.hf.generate``
* ``ours unsteered``   :func:`workbench.generate.generate` without a plan
* ``ours steered``     the same with a plan (an ActAdd front-aligned vector, and a direction at
                       every position including generated tokens)
* ``tl generate``      TransformerLens's ``generate`` (reference)

Targets: steered >= 0.9x hf generate's tokens/s, steered time <= 1.05x unsteered time on our
path. Also 8 coefficients batched in one call against 8 separate calls. Timings are medians of
``--repeats`` runs, interleaved so that load from other processes hits every method alike.

    python benchmarks/bench_steer.py [--model smollm2-135m] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from workbench.generate import generate, generate_with_coefficients
from workbench.models import DEFAULT_MODEL, Model, load_model
from workbench.plan import PlanEntry, SteeringPlan
from workbench.vectors import SteeringVector

PROMPT = "I hate you because"


def _plans(model: Model, layer: int) -> dict[str, SteeringPlan]:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, model.d_model, generator=g)  # (pos, d_model) ActAdd-like
    direction = torch.randn(model.d_model, generator=g)  # (d_model,)
    front = SteeringVector({layer: rows}, model.name, model.d_model)
    every = SteeringVector({layer: direction}, model.name, model.d_model)
    return {
        "front": SteeringPlan([PlanEntry(front, 2.0)]),
        "all": SteeringPlan([PlanEntry(every, 1.0, generated=True)]),
    }


def _hf_native(model: Model, batch: int, tokens: int) -> Callable[[], None]:
    from transformers import GenerationConfig

    ids, mask, _ = model.encode([PROMPT] * batch, padding_side="left")
    hf = model.hf
    assert hf is not None
    config = GenerationConfig(
        max_new_tokens=tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=model.pad_token_id,
        eos_token_id=[int(hf.config.vocab_size) + 1],  # never stop early
    )

    def run() -> None:
        with torch.inference_mode():
            hf.generate(input_ids=ids, attention_mask=mask, generation_config=config)

    return run


def _tl_native(model: Model, batch: int, tokens: int) -> Callable[[], None]:
    ids, _, _ = model.encode([PROMPT] * batch)

    def run() -> None:
        with torch.inference_mode():
            model.tl.generate(
                ids, max_new_tokens=tokens, do_sample=False, stop_at_eos=False, verbose=False
            )

    return run


def _ours(model: Model, batch: int, tokens: int, plan: SteeringPlan | None) -> Callable[[], None]:
    def run() -> None:
        generate(
            model, PROMPT, plan, n=batch, max_new_tokens=tokens, temperature=0.0, stop_at_eos=False
        )

    return run


def _time(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _measure(methods: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    for fn in methods.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(_time(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--skip-tl", action="store_true", help="skip the slow TL reference")
    args = parser.parse_args()

    model = load_model(args.model)
    plans = _plans(model, args.layer)
    print(
        f"model {model.name}, {args.tokens} new tokens, KV cache, greedy, "
        f"{torch.get_num_threads()} torch threads, median of {args.repeats}"
    )
    for batch in (1, 8):
        methods = {
            "hf generate": _hf_native(model, batch, args.tokens),
            "ours unsteered": _ours(model, batch, args.tokens, None),
            "ours steered front": _ours(model, batch, args.tokens, plans["front"]),
            "ours steered all": _ours(model, batch, args.tokens, plans["all"]),
        }
        if not args.skip_tl:
            methods["tl generate"] = _tl_native(model, batch, args.tokens)
        secs = _measure(methods, args.repeats)
        print(f"\nbatch {batch}")
        for name, s in secs.items():
            print(f"  {name:<20} {batch * args.tokens / s:8.1f} tokens/s  ({s:.2f} s)")
        for kind in ("front", "all"):
            steered = secs[f"ours steered {kind}"]
            print(
                f"  steered {kind:<5}: {secs['hf generate'] / steered:.2f}x hf generate's speed "
                f"(target >= 0.9), {steered / secs['ours unsteered']:.3f}x unsteered cost "
                "(target <= 1.05)"
            )

    coeffs = [float(c) for c in range(-4, 4)]
    entry = plans["all"].entries[0]

    def batched() -> None:
        generate_with_coefficients(
            model, PROMPT, entry, coeffs, n=1, max_new_tokens=args.tokens, temperature=0.0,
            stop_at_eos=False,
        )  # fmt: skip

    def separate() -> None:
        for c in coeffs:
            generate_with_coefficients(
                model, PROMPT, entry, [c], n=1, max_new_tokens=args.tokens, temperature=0.0,
                stop_at_eos=False,
            )  # fmt: skip

    secs = _measure({"batched": batched, "separate": separate}, max(1, args.repeats - 1))
    print(
        f"\n8 coefficients: batched {secs['batched']:.2f} s, separate {secs['separate']:.2f} s, "
        f"batched is {secs['separate'] / secs['batched']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
