"""Discovery with calibration: the whole run, and batched trials against one candidate at a time.

Issue 12's targets: k=16 candidates with calibration on the embedded model, the whole discover
run (capture, fit, statistics, calibration, effects, completions, labels) under 60 s on 2 cores,
and at least 5x faster than trying candidates one at a time.

* ``whole run``: :func:`workbench.commands.discover.run_discovery` on an unlabelled mix of the
  built-in formal and casual sentences (128 documents), the default method (ICA) with ``--k``, wall and CPU time and
  the peak resident memory of this process;
* ``batched``: :func:`workbench.decompose.discover.discover` on the fitted dictionary (every
  signed candidate and the random controls in shared batched passes);
* ``one at a time``: the same calibration, effect and completion steps run for one candidate at a
  time (what a loop over ``workbench steer``-style runs does), timed on ``--loop-candidates``
  candidates and scaled to all of them (the per-candidate cost does not depend on which).

    python benchmarks/bench_discover.py [--layer 8] [--k 16] [--loop-candidates 4] [--smoke]

``--smoke`` runs the same code on a tiny random model and a synthetic store (seconds, no speed
targets: toy sizes say nothing about speed). Either way, the candidates tried one at a time must
get the batched run's coefficient and effect, or the script exits non-zero.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import tempfile
import time
from pathlib import Path

import torch

from dictionaries import Dictionary
from workbench.activations.store import ActivationStore
from workbench.commands.discover import run_discovery
from workbench.corpora import load_corpus
from workbench.decompose.discover import Discovery, discover
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.trials import Trials, TrialSettings, row_steering
from workbench.model.hooks import Site, default_backend
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.testing import make_tiny_model, planted_store
from workbench.vectors.dictionary import from_component

# (index, sign) -> (suggested coefficient or None, effect) of one candidate
Measured = dict[tuple[int, int], tuple[float | None, float]]


def _one_at_a_time(
    model: Model,
    dictionary: Dictionary,
    store: ActivationStore,
    layer: int,
    n: int,
    s: TrialSettings,
) -> tuple[float, Measured]:
    """Seconds per candidate when each candidate's trials run on their own, and what they gave."""
    site = Site(store.site, layer)
    backend = default_backend(model)
    prompts = load_corpus(s.prompts, limit=s.n_prompts)
    held_out = load_corpus(s.damage_texts)[-s.n_damage :]
    signed = [(i // 2, 1 - 2 * (i % 2)) for i in range(n)]
    vectors = [from_component(dictionary, i, sign, model=model) for i, sign in signed]
    measured: Measured = {}
    start = time.perf_counter()
    with row_steering(model, site, backend) as state:
        trials = Trials(model, state, s, backend)
        for key, v in zip(signed, vectors, strict=True):
            unit = v.directions[layer].unsqueeze(0)  # (1, d)
            norm = v.layer_norms[layer]
            cal = trials.calibrate(unit, norm, held_out)
            found = float(cal.coeff[0])
            coeff = 0.0 if math.isnan(found) else found
            delta = unit * coeff * norm
            effect, _ = trials.effects(delta, prompts)
            zero = torch.zeros_like(delta)
            trials.completions(torch.cat([zero, delta]), prompts[: s.n_completion_prompts])
            measured[key] = (None if math.isnan(found) else found, float(effect[0]))
    return (time.perf_counter() - start) / n, measured


def _check_same(batched: Discovery, alone: Measured) -> None:
    """Trials are independent per candidate: batching them must not change their numbers."""
    by_key = {(c.index, c.sign): c for c in batched.candidates}
    for key, (coeff, effect) in alone.items():
        c = by_key[key]
        same_coeff = (c.suggested_coeff is None and coeff is None) or (
            c.suggested_coeff is not None
            and coeff is not None
            and math.isclose(c.suggested_coeff, coeff, rel_tol=1e-3)
        )
        if not (same_coeff and math.isclose(c.effect, effect, rel_tol=1e-3, abs_tol=1e-9)):
            raise SystemExit(
                f"bench_discover: wrong result: candidate {key} batched gave coefficient "
                f"{c.suggested_coeff} and effect {c.effect}, alone {coeff} and {effect}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layer", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--loop-candidates", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds, no targets")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.smoke:
            torch.set_num_threads(1)  # a tiny model only loses time syncing threads
            model = load_model(str(make_tiny_model(root / "tiny")))
            layer, k = 1, 4
            planted_store(root / "acts", model, layer=layer, n_docs=20)
            settings = TrialSettings(n_prompts=2, n_damage=2, max_new_tokens=3, n_random=2)
            corpus = None
        else:
            model = load_model(args.model)
            layer, k = args.layer, args.k
            settings = TrialSettings()
            docs = load_corpus("builtin:formal") + load_corpus("builtin:casual")
            random.Random(0).shuffle(docs)
            corpus = root / "mix.txt"
            corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_discovery(
            model,
            layer=layer,
            out=root / "run",
            corpus=None if corpus is None else str(corpus),
            acts=root / "acts" if corpus is None else None,
            k=k,
            settings=settings,
        )
        whole, whole_cpu = time.perf_counter() - t0, time.process_time() - c0
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store = ActivationStore.open(root / "run" / "acts" if corpus else root / "acts")
        pca = fit_from_store(make_dictionary(result.method, k), store, layer)
        t0 = time.perf_counter()
        again = discover(model, pca, store, layer=layer, settings=settings)
        batched = (time.perf_counter() - t0) / len(again.candidates)
        n_loop = max(1, min(args.loop_candidates, 2 * k))
        per_candidate, alone = _one_at_a_time(model, pca, store, layer, n_loop, settings)
        _check_same(again, alone)
    n = len(result.candidates)
    ratio = per_candidate / batched
    print(f"discover on {model.name}, layer {layer}, {result.method} k={k}: {n} candidates")
    print(f"  whole run: {whole:.1f} s wall, {whole_cpu:.1f} s CPU, peak RSS {peak_mib:.0f} MiB")
    print(f"  batched trials: {batched:.2f} s per candidate ({batched * n:.1f} s for {n})")
    print(
        f"  one at a time:  {per_candidate:.2f} s per candidate (measured on {n_loop}; "
        "same coefficients and effects as batched)"
    )
    print(f"  speed-up: {ratio:.1f}x")
    if not args.smoke:
        print(
            f"  targets: whole run < 60 s: {'met' if whole < 60 else 'MISSED'}; "
            f">= 5x: {'met' if ratio >= 5 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
