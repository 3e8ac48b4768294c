"""Benchmark MELBO and the Jacobian (a script, not a test).

1. Speed: the same ``k`` vectors, seeds and iterations trained in one batch (rows = vector x
   prompt, one forward per step) and one at a time (each projected off the finished ones, the
   public implementations' way): vectors per second for each. Target: batched >= 5x.
2. Jacobian power iteration against MELBO: seconds, and the cosine between the directions they
   find (top direction against top direction, and each Jacobian direction's best match).
3. Displacement of the target layer by the learned vectors against 16 norm-matched random
   directions at the same radius (ratio of mean objectives, 95% bootstrap interval over prompts,
   and each vector's own ratio).

Usage: ``python benchmarks/bench_melbo.py [--source 6 --target 18 --k 8 --iterations 20]
[--smoke]``. ``--smoke`` runs the same code on a tiny random model (seconds, no targets).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from workbench.decompose.jacobian import train_jacobian
from workbench.decompose.learned import displacement_vs_random
from workbench.decompose.melbo import train_melbo
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.testing import make_tiny_model


def bench(
    model: Model, source: int, target: int, k: int, iterations: int, n_prompts: int
) -> dict[str, Any]:
    common: dict[str, Any] = {"source": source, "target": target, "k": k, "n_prompts": n_prompts}
    batched = train_melbo(model, iterations=iterations, batched=True, **common)
    alone = train_melbo(model, iterations=iterations, batched=False, **common)
    began = time.perf_counter()
    jac = train_jacobian(model, iterations=max(2, iterations // 2), **common)
    jac_seconds = time.perf_counter() - began
    cos = (jac.directions @ batched.directions.T).abs()  # (k, k)
    vs_random = displacement_vs_random(model, batched)
    return {
        "model": model.name,
        "source": source,
        "target": target,
        "k": k,
        "iterations": iterations,
        "n_prompts": n_prompts,
        "batched_seconds": round(batched.seconds, 3),
        "one_at_a_time_seconds": round(alone.seconds, 3),
        "batched_vectors_per_s": round(k / batched.seconds, 3),
        "one_at_a_time_vectors_per_s": round(k / alone.seconds, 3),
        "speedup": round(alone.seconds / batched.seconds, 2),
        "objective_batched": [round(x, 3) for x in batched.objective],
        "objective_one_at_a_time": [round(x, 3) for x in alone.objective],
        "jacobian_seconds": round(jac_seconds, 3),
        "jacobian_iterations": max(2, iterations // 2),
        "cosine_top_direction": round(float(cos[0, 0]), 3),
        "cosine_best_match": [round(float(x), 3) for x in cos.max(dim=1).values],
        "learned_over_random": round(vs_random["ratio"], 2),
        "learned_over_random_ci": [round(x, 2) for x in vs_random["ratio_ci"]],
        "learned_over_random_per_vector": [round(x, 2) for x in vs_random["per_vector"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--source", type=int, default=6)
    parser.add_argument("--target", type=int, default=18)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N], mps or auto")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, seconds")
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(1)  # a tiny model runs fastest on one thread
        with tempfile.TemporaryDirectory() as tmp:
            model = load_model(str(make_tiny_model(Path(tmp) / "tiny")))
            result = bench(model, 1, 3, 3, 3, 4)
    else:
        model = load_model(args.model, device=args.device)
        result = bench(model, args.source, args.target, args.k, args.iterations, args.n_prompts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
