"""GPU check: the workbench on an accelerator in bfloat16 agrees with the CPU in float32.

Runs capture, vector building, greedy steered generation and a small sweep on ``--device``
(default cuda) in ``--dtype`` (default bfloat16) and on the CPU in float32, compares them and
prints throughput for both. Exits 1 on a mismatch, 2 when the device is missing.

Checks (embedded SmolLM2-135M unless ``--model``):
- prompt-pair vectors: cosine > 0.99 at every position and layer;
- captured activations: max |difference| within bfloat16 tolerance (relative to the rows' scale);
- greedy completions of a short prompt, unsteered and steered: identical token ids;
- a 3-coefficient sweep: the same overshoot marks and effects within tolerance.

Usage: ``python scripts/gpu_check.py [--device cuda] [--dtype bfloat16] [--model NAME]``;
``--device cpu --dtype bfloat16`` dry-runs the comparison logic on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.errors import WorkbenchError
from workbench.experiments.sweep import SweepConfig, run_sweep
from workbench.measure.effects import MeasureSpec, default_effect
from workbench.model.load import Model, load_model
from workbench.steer.generate import generate
from workbench.steer.plan import SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.vectors.build import from_prompts

LAYER = 6
# Short: bfloat16 rounding flips near-ties, and one flipped token changes all that follows.
GREEDY = Sampling(max_new_tokens=4, temperature=0.0)


def _run(model: Model, folder: Path) -> dict[str, Any]:
    """Everything the check compares, measured on one model; with timings."""
    out: dict[str, Any] = {}
    docs = load_corpus("builtin:general", limit=64)
    t0 = time.perf_counter()
    res = capture(model, docs, [LAYER], out=folder / "acts", progress_bar=False, dtype="float32")
    out["capture_tok_s"] = res.rows / (time.perf_counter() - t0)
    out["rows"] = ActivationStore.open(folder / "acts").load(LAYER)
    t0 = time.perf_counter()
    vec = from_prompts(model, " wedding", " ", [LAYER, LAYER + 4])
    out["vector_s"] = time.perf_counter() - t0
    out["vector"] = vec
    plan = SteeringPlan.of(vec.at_layers([LAYER]), 4.0)
    t0 = time.perf_counter()
    prompts = ["I went up to my friend and said", "The weather today is"]
    out["unsteered"] = generate(model, prompts, None, sampling=GREEDY).tokens.tolist()
    out["steered"] = generate(model, prompts, plan, sampling=GREEDY).tokens.tolist()
    out["generate_s"] = time.perf_counter() - t0
    spec = MeasureSpec(
        on_target=load_corpus("builtin:wedding", limit=4),
        off_target=load_corpus("builtin:unrelated", limit=4),
    )
    t0 = time.perf_counter()
    sweep = run_sweep(
        model,
        vec,
        SweepConfig([0, 2, 8], [LAYER], attention_prompts=0, controls=2),
        spec,
        default_effect(spec),
    )
    out["sweep_s"] = time.perf_counter() - t0
    out["sweep"] = sweep
    return out


def _compare(gpu: dict[str, Any], cpu: dict[str, Any]) -> list[str]:
    """The mismatches, in words (empty: all agree)."""
    bad = []
    for layer in cpu["vector"].layers:
        a, b = gpu["vector"].directions[layer], cpu["vector"].directions[layer]
        cos = torch.nn.functional.cosine_similarity(a[1:], b[1:], dim=-1).min().item()
        if cos <= 0.99:
            bad.append(f"vector at layer {layer}: min cosine {cos:.4f} <= 0.99")
    diff = (gpu["rows"] - cpu["rows"]).abs().max().item()
    scale = cpu["rows"].abs().max().item()
    if diff > 0.05 * scale:  # bfloat16 keeps 8 bits of mantissa; 30 layers compound it
        bad.append(f"captured rows differ by {diff:.3g} (scale {scale:.3g})")
    for key in ("unsteered", "steered"):
        if gpu[key] != cpu[key]:
            bad.append(f"greedy {key} completions differ: {gpu[key]} vs {cpu[key]}")
    og, oc = gpu["sweep"]["overshoot"][0], cpu["sweep"]["overshoot"][0]
    for mark in ("onset", "best", "breakdown"):
        if og[mark] != oc[mark]:
            bad.append(f"sweep {mark}: {og[mark]} vs {oc[mark]}")
    for rg, rc in zip(gpu["sweep"]["rows"], cpu["sweep"]["rows"], strict=True):
        if abs(rg["effect"] - rc["effect"]) > 0.05 * max(1.0, abs(rc["effect"])):
            bad.append(
                f"sweep effect at coeff {rc['coeff']}: {rg['effect']:.4g} vs {rc['effect']:.4g}"
            )
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    try:
        accel = load_model(args.model, device=args.device, dtype=args.dtype, reuse=False)
    except WorkbenchError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    ref = load_model(args.model, device="cpu", dtype="float32", reuse=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gpu = _run(accel, Path(tmp) / "accel")
        t1 = time.perf_counter()
        cpu = _run(ref, Path(tmp) / "cpu")
        t2 = time.perf_counter()
    timing = {
        k: {"accel": round(gpu[k], 2), "cpu": round(cpu[k], 2)}
        for k in ("capture_tok_s", "vector_s", "generate_s", "sweep_s")
    }
    bad = _compare(gpu, cpu)
    print(
        json.dumps(
            {
                "device": str(accel.device),
                "dtype": args.dtype,
                "total_s": {"accel": round(t1 - t0, 1), "cpu": round(t2 - t1, 1)},
                "timing": timing,
                "mismatches": bad,
            },
            indent=2,
        )
    )
    print("gpu_check: " + ("OK" if not bad else f"{len(bad)} MISMATCHES"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
