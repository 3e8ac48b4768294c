"""Benchmark model start-up and resident memory (a script, not a test).

1. Fast start: CPU and wall seconds of ``load_model`` (the embedded model, its converted
   transformers folder already cached) against transformers' own ``from_pretrained`` of the
   same folder plus its tokenizer, each in a fresh process, imports excluded. Target: <= 1.2x,
   and <= 2 s of CPU for the workbench.
2. Memory: peak RSS growth of a ``workbench steer`` run (load, build a prompt-pair vector,
   steered and unsteered generation) above the process after its imports, against the fp32
   weights. Target: <= 1.3x the weights. For reference, the same run with the TransformerLens
   view built too (the old default: two copies of the weights).

Usage: ``python benchmarks/bench_load.py [--repeats 3] [--smoke]``

``--smoke`` runs the same code in this process on a tiny random model (seconds, no targets).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from child import run_child


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _folder(name: str) -> str:
    """The transformers folder ``load_model(name)`` reads (converting a GGUF once)."""
    from workbench.model.embedded import _EMBEDDED, convert_gguf, embedded_gguf

    gguf = embedded_gguf(name) if name in _EMBEDDED else None
    return str(convert_gguf(gguf)) if gguf is not None else name


def child(args: list[str]) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch
    import transformers  # noqa: F401  (imports excluded from the timing)

    from workbench.model.load import load_model

    what, name = args[0], args[1]
    torch.set_num_threads(2)
    folder = _folder(name)
    base = _current_rss_mib()
    c0, t0 = time.process_time(), time.perf_counter()
    if what == "workbench":
        model = load_model(name, reuse=False)
        weights = model.hf
    elif what == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoTokenizer.from_pretrained(folder)
        weights = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    else:  # steer / steer+tl: memory of a whole steer run
        from workbench.steer.generate import side_by_side
        from workbench.steer.plan import SteeringPlan
        from workbench.steer.sampling import Sampling
        from workbench.vectors.build import from_prompts

        model = load_model(name, reuse=False)
        weights = model.hf
        if what == "steer+tl":
            _ = model.tl  # the second copy, as before one copy was the default
        vec = from_prompts(model, "Love", "Hate", [min(6, model.n_layers - 1)])
        side_by_side(
            model,
            "I hate you because",
            SteeringPlan.of(vec, 4.0),
            n=1,
            sampling=Sampling(max_new_tokens=16),
        )
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert weights is not None
    n_bytes = sum(p.numel() * 4 for p in weights.parameters())
    print(
        json.dumps(
            {
                "what": what,
                "cpu_s": cpu,
                "wall_s": wall,
                "peak_growth_mib": _rss_mib() - base,
                "weights_fp32_mib": n_bytes / 2**20,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    name = "smollm2-135m"
    if args.smoke:
        from workbench.testing import make_tiny_model

        name = str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    repeats = 1 if args.smoke else args.repeats
    script = str(Path(__file__).resolve())

    def measure(what: str) -> list[dict[str, Any]]:
        return [
            run_child(script, main, ["--child", what, name], args.smoke) for _ in range(repeats)
        ]

    _folder(name)  # convert once, outside the timings
    ours, theirs = measure("workbench"), measure("transformers")
    cpu_ours = statistics.median(r["cpu_s"] for r in ours)
    cpu_theirs = statistics.median(r["cpu_s"] for r in theirs)
    steer, steer_tl = measure("steer")[0], measure("steer+tl")[0]
    weights = steer["weights_fp32_mib"]
    report = {
        "model": "tiny" if args.smoke else name,
        "load_cpu_s": round(cpu_ours, 2),
        "load_wall_s": round(statistics.median(r["wall_s"] for r in ours), 2),
        "transformers_cpu_s": round(cpu_theirs, 2),
        "load_vs_transformers": round(cpu_ours / max(cpu_theirs, 1e-9), 2),
        "weights_fp32_mib": round(weights, 1),
        "steer_peak_growth_mib": round(steer["peak_growth_mib"], 1),
        "steer_growth_vs_weights": round(steer["peak_growth_mib"] / weights, 2),
        "steer_with_tl_growth_vs_weights": round(steer_tl["peak_growth_mib"] / weights, 2),
    }
    print(json.dumps(report, indent=2))
    if not args.smoke:
        ok = report["load_vs_transformers"] <= 1.2 and report["steer_growth_vs_weights"] <= 1.3
        print(
            f"targets (load <= 1.2x transformers, steer <= 1.3x weights): {'met' if ok else 'MISSED'}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
