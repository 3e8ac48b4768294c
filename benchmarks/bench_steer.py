"""Steered generation speed against transformers' own ``generate`` (issue 4's targets).

Measured in one run on the default model, 64 new tokens, KV cache on, EOS ignored so every run
makes the same number of tokens, at batch 1 and batch 8:

* ``hf generate``      transformers' own unsteered ``model.hf.generate``
* ``ours unsteered``   :func:`workbench.steer.generate.generate` without a plan
* ``ours steered``     the same with a plan (an ActAdd front-aligned vector, and a direction at
                       every position including generated tokens)
* ``tl generate``      TransformerLens's ``generate`` (reference)

Targets: steered >= 0.9x hf generate's tokens/s, steered time <= 1.05x unsteered time on our
path. Also sampled generation (temperature 1, top-p 0.3) at batch 8 against transformers' own
sampling. Also 8 coefficients batched in one call against 8 separate calls. Timings are medians of
``--repeats`` runs, interleaved so that load from other processes hits every method alike, by
wall clock and by this process's CPU time (steadier on a shared machine, with ``--threads 1``).

Checked on the way: greedy, our unsteered tokens are transformers' own, at both batch sizes, and
the 8 coefficients batched give the texts of the 8 separate calls.

    python benchmarks/bench_steer.py [--model smollm2-135m] [--tokens 64] [--repeats 3] [--smoke]

``--smoke`` runs the same code on a tiny random model with 4 new tokens (seconds, no targets:
toy sizes say nothing about speed). Wrong results exit non-zero either way.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.steer.generate import generate, generate_with_coefficients
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.testing import make_tiny_model
from workbench.vectors.vector import SteeringVector

PROMPT = "I hate you because"
SMOKE_TOKENS = 4
SMOKE_LAYER = 1

Run = Callable[[], list[list[int]]]  # one generation; returns the new tokens of each row


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_steer: wrong result: {what}")


def _settings(tokens: int, sample: bool = False) -> Sampling:
    """Greedy, or temperature 1 and top-p 0.3; EOS ignored so every run makes ``tokens``."""
    if sample:
        return Sampling(max_new_tokens=tokens, temperature=1.0, top_p=0.3, stop_at_eos=False)
    return Sampling(max_new_tokens=tokens, temperature=0.0, stop_at_eos=False)


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


def _hf_native(model: Model, batch: int, tokens: int, sample: bool = False) -> Run:
    from transformers import GenerationConfig

    ids, mask, _ = model.encode([PROMPT] * batch, padding_side="left")
    hf = model.hf
    assert hf is not None
    config = GenerationConfig(
        max_new_tokens=tokens,
        do_sample=sample,
        use_cache=True,
        pad_token_id=model.pad_token_id,
        eos_token_id=[int(hf.config.vocab_size) + 1],  # never stop early
        **({"temperature": 1.0, "top_p": 0.3, "top_k": 0} if sample else {}),
    )

    def run() -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return out[:, ids.shape[1] :].tolist()  # (batch, new)

    return run


def _tl_native(model: Model, batch: int, tokens: int) -> Run:
    ids, _, _ = model.encode([PROMPT] * batch)

    def run() -> list[list[int]]:
        with torch.inference_mode():
            out = model.tl.generate(
                ids, max_new_tokens=tokens, do_sample=False, stop_at_eos=False, verbose=False
            )
        return out[:, ids.shape[1] :].tolist()  # (batch, new)

    return run


def _ours(
    model: Model, batch: int, tokens: int, plan: SteeringPlan | None, sample: bool = False
) -> Run:
    def run() -> list[list[int]]:
        gen = generate(model, PROMPT, plan, n=batch, sampling=_settings(tokens, sample))
        return gen.tokens[:, gen.prompt_width :].tolist()  # (batch, new)

    return run


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _measure(
    methods: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds per method."""
    for fn in methods.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu = _time(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
    med = statistics.median
    return {k: med(v) for k, v in walls.items()}, {k: med(v) for k, v in cpus.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--skip-tl", action="store_true", help="skip the slow TL reference")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds, no targets")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            torch.set_num_threads(1)  # a tiny model only loses time syncing threads
            model = load_model(str(make_tiny_model(Path(tmp) / "tiny")))
            args.tokens, args.repeats, args.layer = SMOKE_TOKENS, 1, SMOKE_LAYER
        else:
            model = load_model(args.model)
        run(model, args.tokens, args.repeats, args.layer, args.skip_tl, args.smoke)


def run(model: Model, tokens: int, repeats: int, layer: int, skip_tl: bool, smoke: bool) -> None:
    plans = _plans(model, layer)
    print(
        f"model {model.name}, {tokens} new tokens, KV cache, greedy, "
        f"{torch.get_num_threads()} torch threads, median of {repeats}"
    )
    for batch in (1, 8):
        methods = {
            "hf generate": _hf_native(model, batch, tokens),
            "ours unsteered": _ours(model, batch, tokens, None),
            "ours steered front": _ours(model, batch, tokens, plans["front"]),
            "ours steered all": _ours(model, batch, tokens, plans["all"]),
        }
        if not skip_tl:
            methods["tl generate"] = _tl_native(model, batch, tokens)
        ours, theirs = methods["ours unsteered"](), methods["hf generate"]()
        _check(ours == theirs, f"batch {batch}: greedy unsteered tokens differ from hf generate's")
        walls, cpus = _measure(dict(methods), repeats)
        print(f"\nbatch {batch}: tokens/s by wall clock and per CPU-second")
        target_speed, target_cost = ("", "") if smoke else (" (target >= 0.9)", " (target <= 1.05)")
        for name in methods:
            made = batch * tokens
            print(
                f"  {name:<20} {made / walls[name]:7.1f} tokens/s ({walls[name]:6.2f} s)   "
                f"{made / cpus[name]:7.1f} tokens/CPU-s ({cpus[name]:6.2f} CPU-s)"
            )
        for kind in ("front", "all"):
            name = f"ours steered {kind}"
            print(
                f"  steered {kind:<5}: speed vs hf generate {walls['hf generate'] / walls[name]:.2f}x "
                f"wall, {cpus['hf generate'] / cpus[name]:.2f}x CPU{target_speed}; cost vs "
                f"unsteered {walls[name] / walls['ours unsteered']:.3f}x wall, "
                f"{cpus[name] / cpus['ours unsteered']:.3f}x CPU{target_cost}"
            )
        print("  greedy unsteered tokens: identical to hf generate's")

    sampled = {
        "hf generate sampled": _hf_native(model, 8, tokens, sample=True),
        "ours steered sampled": _ours(model, 8, tokens, plans["all"], sample=True),
    }
    walls, cpus = _measure(dict(sampled), repeats)
    print("\nbatch 8, sampled (temperature 1, top-p 0.3)")
    for name in sampled:
        made = 8 * tokens
        print(
            f"  {name:<20} {made / walls[name]:7.1f} tokens/s ({walls[name]:6.2f} s)   "
            f"{made / cpus[name]:7.1f} tokens/CPU-s ({cpus[name]:6.2f} CPU-s)"
        )

    coeffs = [float(c) for c in range(-4, 4)]
    entry = plans["all"].entries[0]
    texts: dict[str, list[list[str]]] = {}

    def batched() -> None:
        texts["batched"] = generate_with_coefficients(
            model, PROMPT, entry, coeffs, n=1, sampling=_settings(tokens)
        )

    def separate() -> None:
        texts["separate"] = [
            generate_with_coefficients(model, PROMPT, entry, [c], n=1, sampling=_settings(tokens))[
                0
            ]
            for c in coeffs
        ]

    walls, cpus = _measure({"batched": batched, "separate": separate}, max(1, repeats - 1))
    _check(texts["batched"] == texts["separate"], "8 coefficients batched differ from separate")
    print(
        f"\n8 coefficients x {tokens} tokens (identical texts both ways): "
        f"batched {walls['batched']:.2f} s "
        f"({cpus['batched']:.2f} CPU-s), separate {walls['separate']:.2f} s "
        f"({cpus['separate']:.2f} CPU-s): batched is {walls['separate'] / walls['batched']:.2f}x "
        f"faster by wall clock, {cpus['separate'] / cpus['batched']:.2f}x by CPU time"
    )


if __name__ == "__main__":
    main()
