"""Measure MELBO across radii R, to choose the default (a measurement script, not a test).

For each R (units: the source layer's mean residual norm), train ``k`` MELBO vectors with the
same seed, prompts and iterations, then report:

1. displacement of the target layer against 16 norm-matched random directions at the same R
   (ratio of mean objectives, 95% bootstrap interval over prompts);
2. damage when steering at R itself: perplexity ratio on held-out general text (median over the
   vectors, + sign), against the damage budget;
3. the discovery: both signs calibrated to the damage budget, effect over calibrated random
   controls, contrastive words of the steered completions; a vector "changes completions within
   the budget" when one of its signs has a coefficient within the budget, is not inert (beats
   the random controls' median effect) and has at least one contrastive word;
4. the rule's choice (the default ``DEFAULT_RADIUS``): the largest R at which every trained
   vector, steered at R itself, keeps the damage budget.

Results on SmolLM2-135M: ``benchmarks/results/melbo_radius_smollm2.json`` and the README.

Usage: ``python benchmarks/bench_melbo_radius.py [--radii 0.125,0.25,0.5,1,2] [--source 6]
[--k 4] [--iterations 30] [--json out.json]``; ``--smoke`` runs the same code on a tiny random
model in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from workbench.corpora import load_corpus
from workbench.decompose.learned import DEFAULT_MEASURE, MEASURES, displacement_vs_random
from workbench.decompose.melbo import train_melbo
from workbench.decompose.trials import Trials, TrialSettings, row_steering
from workbench.decompose.unsupervised import default_target, discover_learned
from workbench.model.hooks import Site, default_backend
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.steer.forward import encode_inputs
from workbench.testing import make_tiny_model


def changed_within_budget(discovery: Any, k: int) -> list[bool]:
    """Per learned vector: does one of its signs change completions within the budget?"""
    ok = [False] * k
    for c in discovery.candidates:
        flags = discovery.flags(c)
        if c.suggested_coeff is not None and not c.inert and c.contrastive_words and not flags:
            ok[c.index] = True
    return ok


def one_radius(
    model: Model,
    radius: float,
    source: int,
    target: int,
    k: int,
    iterations: int,
    n_prompts: int,
    measure: str,
) -> dict[str, Any]:
    learned = train_melbo(
        model,
        source=source,
        target=target,
        k=k,
        radius=radius,
        iterations=iterations,
        n_prompts=n_prompts,
        measure=measure,
    )
    vs_random = displacement_vs_random(model, learned)
    s = TrialSettings()
    at_r = _ppl_ratios(model, learned.directions, radius * learned.mean_norm, source, s)
    discovery = discover_learned(model, learned, settings=s)
    changed = changed_within_budget(discovery, k)
    best: dict[int, Any] = {}
    for c in discovery.candidates:  # sorted best first: the first seen sign of each vector
        best.setdefault(c.index, c)
    return {
        "radius": radius,
        "train_seconds": round(learned.seconds, 1),
        "displacement_vs_random": round(vs_random["ratio"], 2),
        "displacement_ci": [round(x, 2) for x in vs_random["ratio_ci"]],
        "ppl_ratio_at_R": [round(x, 3) for x in at_r],
        "within_budget_at_R": sum(x <= s.damage_budget for x in at_r),
        "suggested_coeff": [best[i].suggested_coeff for i in range(k)],
        "effect_vs_random": [
            None if best[i].effect_vs_random is None else round(best[i].effect_vs_random, 2)
            for i in range(k)
        ],
        "contrastive_words": [best[i].contrastive_words for i in range(k)],
        "changed_within_budget": sum(changed),
        "k": k,
    }


def _ppl_ratios(
    model: Model, directions: torch.Tensor, scale: float, layer: int, s: TrialSettings
) -> list[float]:
    general = load_corpus(s.damage_texts)
    held_out = general[-s.n_damage :] if len(general) > s.n_damage else general
    site = Site("resid_pre", layer)
    backend = default_backend(model)
    ids, mask = encode_inputs(model, held_out, max_tokens=s.damage_max_tokens)
    with row_steering(model, site, backend) as state:
        trials = Trials(model, state, s, backend)
        base = trials.losses(torch.zeros(1, model.d_model), ids, mask).mean()
        losses = trials.losses(directions * scale, ids, mask).mean(1)  # (k,)
    return [math.exp(float(x - base)) for x in losses]


def choose(rows: list[dict[str, Any]]) -> float:
    """The largest R at which every trained vector, steered at R, keeps the damage budget (above
    it MELBO finds directions that break the text); the smallest R tried if none does."""
    kept = [r["radius"] for r in rows if r["within_budget_at_R"] == r["k"]]
    return float(max(kept) if kept else min(r["radius"] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--radii", default="0.015625,0.03125,0.0625,0.125,0.25,0.5,1,2")
    parser.add_argument("--source", type=int, default=6)
    parser.add_argument("--target", type=int, default=None)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--n-prompts", type=int, default=12)
    parser.add_argument("--measure", default=DEFAULT_MEASURE, choices=MEASURES)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, seconds")
    args = parser.parse_args()
    radii = [float(x) for x in args.radii.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            torch.set_num_threads(1)
            model = load_model(str(make_tiny_model(Path(tmp) / "tiny")))
            radii, source, target, k, iterations, n_prompts = [0.5, 2.0], 1, 3, 2, 2, 4
        else:
            model = load_model(args.model)
            source, k, iterations, n_prompts = args.source, args.k, args.iterations, args.n_prompts
            target = default_target(model, source) if args.target is None else args.target
        rows = []
        for r in radii:
            row = one_radius(model, r, source, target, k, iterations, n_prompts, args.measure)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        "model": model.name,
        "source": source,
        "target": target,
        "measure": args.measure,
        "choice": choose(rows),
    }
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
