"""Do steering vectors compose? Each vector's effect alone and in company, and the damage.

ActAdd added "Love" - "Hate" at layer 6 and " wedding" - " " at layer 15 together and asked
whether each kept its effect. For ``n`` vectors this module measures, in one batch per measure
(:func:`workbench.measure.effects.measure`), the unsteered model, each vector alone, every pair and all
together; each vector's *own* metric (the next-token log-prob shift of its target words by
default, or words per sampled completion, or sentiment) is read off every run, and
:mod:`workbench.experiments.composition_math` turns them into

* retention ``= combined / alone`` per vector,
* the pairwise interference matrix ``1 - (i with j) / (i alone)``,
* cosine similarity of the vectors that share a layer,

next to the damage (off-target perplexity ratio, KL on neutral prompts) of the combination and
of each vector alone. Retention and interference carry paired bootstrap intervals over prompts,
and the same numbers are measured with matched controls composed in each vector's place
(control-word vectors for prompt pairs, norm-matched random vectors otherwise; ``controls`` per
vector), so "retains 80%" can be told from what any vector of that kind would do. ``orthogonalize`` removes from each vector its components along the earlier
vectors at the same layer first (Gram-Schmidt in the order given).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from workbench.errors import check
from workbench.experiments.composition_math import cosine_matrix, interference_matrix, retention
from workbench.measure.controls import DEFAULT_CONTROLS, Control, check_controls
from workbench.measure.effects import (
    Condition,
    ConditionResult,
    MeasureSpec,
    Targets,
    controls_for,
    measure,
    vector_at_layer,
)
from workbench.measure.stats import Estimate, bootstrap_ratio, estimate_diff
from workbench.model.load import Model
from workbench.steer.plan import PlanEntry
from workbench.vectors.vector import SteeringVector

SCORES = ("sentiment",)


@dataclass
class ComposeItem:
    """One vector of a composition, with its coefficient, layer and own metric.

    ``targets`` (its target words) or ``score="sentiment"`` says what its effect is; with
    ``sampled`` the target metric is words per sampled completion instead of the next-token
    log-prob shift.
    """

    vector: SteeringVector
    coeff: float
    layer: int | None = None
    label: str = ""
    targets: Targets | None = None
    score: str | None = None
    position: str | None = None

    def metric(self, sampled: bool) -> str:
        if self.targets is not None:
            kind = "target_words" if sampled else "target_logprob_shift"
            return f"{kind}:{self.targets.name}"
        check(
            self.score in SCORES,
            f"vector '{self.label}' has no metric: give it --target-words W,... or --score "
            "sentiment",
        )
        return str(self.score)


def _comparable(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-shape views for a cosine: aligned rows front-padded, or mean rows vs directions."""
    if a.shape == b.shape:
        return a, b
    if a.dim() == 2 and b.dim() == 2:
        n = max(a.shape[0], b.shape[0])
        pa, pb = torch.zeros(n, a.shape[1]), torch.zeros(n, b.shape[1])  # (pos, d_model)
        pa[: a.shape[0]], pb[: b.shape[0]] = a, b
        return pa, pb
    return (a.mean(0) if a.dim() == 2 else a), (b.mean(0) if b.dim() == 2 else b)


def cosines(vectors: Sequence[SteeringVector], layers: Sequence[int]) -> list[list[float | None]]:
    """Pairwise cosine of the vectors at their layers; ``None`` where layers differ."""
    n = len(vectors)
    out: list[list[float | None]] = [[None] * n for _ in range(n)]
    for i in range(n):
        out[i][i] = 1.0
        for j in range(i + 1, n):
            if layers[i] != layers[j]:
                continue
            a, b = _comparable(vectors[i].directions[layers[i]], vectors[j].directions[layers[j]])
            c = float(cosine_matrix([a, b])[0, 1])
            out[i][j] = out[j][i] = c
    return out


def _orthogonalize(vectors: list[SteeringVector], layers: list[int]) -> list[SteeringVector]:
    """Gram-Schmidt per layer; aligned vectors of different lengths are front-padded with zero
    rows first, so the vectors as applied (front-aligned) come out orthogonal."""
    out: list[SteeringVector] = []
    for i, v in enumerate(vectors):
        for j in range(i):
            if layers[j] == layers[i]:
                a, b = v.directions[layers[i]], out[j].directions[layers[j]]
                if a.dim() == 2 and b.dim() == 2 and a.shape != b.shape:
                    pa, pb = _comparable(a, b)
                    v = replace(v, directions={layers[i]: pa})
                    out[j] = replace(out[j], directions={layers[j]: pb})
                v = v.orthogonalized(out[j])
        out.append(v)
    return out


def summarize(
    alone: Sequence[Estimate], combined: Sequence[Estimate], pairs: Sequence[Sequence[Estimate]]
) -> dict[str, Any]:
    """Retention, interference and significance from each vector's own effect estimates.

    ``alone[i]``: vector i's effect alone; ``combined[i]``: in the run with all vectors;
    ``pairs[i][j]``: in the run with vectors i and j (diagonal: alone). A vector whose alone
    interval contains 0 is flagged in ``alone_significant`` (its ratios mean little).
    """
    ret = retention([c.value for c in combined], [a.value for a in alone])
    inter = interference_matrix([[p.value for p in row] for row in pairs], [a.value for a in alone])
    return {
        "effects": {
            "alone": [a.to_json() for a in alone],
            "combined": [c.to_json() for c in combined],
            "pairs": [[p.to_json() for p in row] for row in pairs],
        },
        "retention": ret.values.tolist(),
        "retention_unreliable": ret.unreliable.tolist(),
        "alone_significant": [a.low > 0 or a.high < 0 for a in alone],
        "interference": inter.matrix.tolist(),
        "interference_unreliable": inter.unreliable.tolist(),
    }


def run_compose(
    model: Model,
    items: Sequence[ComposeItem],
    spec: MeasureSpec,
    *,
    units: str = "raw",
    orthogonalize: bool = False,
    sampled: bool = False,
    controls: int = DEFAULT_CONTROLS,
    control_seed: int = 0,
) -> dict[str, Any]:
    """Measure the vectors alone, in pairs and all together; return the compose JSON.

    With ``controls`` > 0, each vector also gets that many matched controls, each composed in
    its place (at its layer and coefficient) with every other vector and with the rest of the
    combination; the others' effects then give control retention and interference (the
    ``controls`` key), measured on the prompts only (no damage texts).

    ``spec`` must include every item's ``targets`` (and ``sentiment`` if an item uses it).
    ``items`` are left as they are; an item without a label is called ``v1``, ``v2``, ... in
    the JSON.

    Example:
        >>> items = [ComposeItem(love, 5.0, 6, "love", love_words),                # doctest: +SKIP
        ...          ComposeItem(wedding, 5.0, 15, "wedding", wedding_words)]
        >>> data = run_compose(model, items, spec)                                 # doctest: +SKIP
        >>> data["retention"], data["interference"]                                # doctest: +SKIP
    """
    check(len(items) >= 2, "composition needs at least two vectors; give --vector twice")
    check_controls(controls)
    items = _labelled(items)  # copies: the caller's items keep their (empty) labels
    vectors, layers, notes = _prepare(model, items, spec, sampled)
    ctrl_sets = [
        controls_for(model, v, layer, spec, controls, control_seed)
        for v, layer in zip(vectors, layers, strict=True)
    ]
    if orthogonalize:
        vectors = _orthogonalize(vectors, layers)
        notes.append("each vector was orthogonalized against the earlier ones at its layer")
    entries = [
        PlanEntry(v, it.coeff, layers=[layer], position=it.position, units=units, label=it.label)
        for v, it, layer in zip(vectors, items, layers, strict=True)
    ]
    ctrl_entries = [
        PlanEntry(
            c.vector,
            0.0,
            layers=[layers[j]],
            position=entries[j].position,
            units=units,
            label=f"{items[j].label} control {c.label}",
        )
        for j, (cs, _) in enumerate(ctrl_sets)
        for c in cs
    ]
    pad = (0.0,) * len(ctrl_entries)
    conds = [replace(c, coeffs=c.coeffs + pad) for c in _conditions(items)]
    results, base = measure(model, entries + ctrl_entries, conds, spec)
    by = {c.coeffs[: len(items)]: r for c, r in zip(conds, results, strict=True)}
    metrics = [it.metric(sampled) for it in items]
    n = len(items)
    all_run = by[_coeffs(items, range(n))]
    alone_runs = [by[_coeffs(items, [k])] for k in range(n)]
    summary = _summary(items, by, metrics)
    ctrl_json = _controls(
        model, items, entries + ctrl_entries, ctrl_sets, metrics, spec, base, by, sampled
    )
    ctrl_json["seed"] = control_seed
    summary["verdicts"] = _verdicts(items, summary, ctrl_json)
    for _, ctrl_notes in ctrl_sets:
        notes += ctrl_notes
    return {
        "kind": "compose",
        "model": model.name,
        "units": units,
        "orthogonalized": orthogonalize,
        "vectors": [
            {
                "label": it.label,
                "method": v.method,
                "layer": layer,
                "coeff": it.coeff,
                "position": e.position,
                "metric": m,
                "targets": None if it.targets is None else it.targets.to_json(),
            }
            for it, v, layer, e, m in zip(items, vectors, layers, entries, metrics, strict=True)
        ],
        **summary,
        "controls": ctrl_json,
        "cosine": cosines(vectors, layers),
        "damage": _damage_json(all_run, alone_runs),
        "samples": _samples(conds, results, spec),
        "notes": notes,
    }


# --------------------------------------------------------------------------- run_compose's steps


def _labelled(items: Sequence[ComposeItem]) -> list[ComposeItem]:
    """Copies of ``items``, an unlabelled one named by its place (``v1``, ``v2``, ...)."""
    return [replace(it, label=it.label or f"v{i + 1}") for i, it in enumerate(items)]


def _check_item(it: ComposeItem, spec: MeasureSpec, sampled: bool) -> None:
    """Fail before any model run if ``spec`` cannot measure the item's own metric."""
    if it.targets is not None:
        names = [t.name for t in spec.targets]
        check(it.targets.name in names, f"targets of '{it.label}' are missing from the spec")
    if it.score == "sentiment":
        check(spec.sentiment and spec.n > 0, "sentiment needs sampled completions (--n > 0)")
    check(
        not (sampled and it.targets is not None and spec.n == 0),
        "sampled target words need completions; give --n > 0",
    )


def _prepare(
    model: Model, items: Sequence[ComposeItem], spec: MeasureSpec, sampled: bool
) -> tuple[list[SteeringVector], list[int], list[str]]:
    """Check each item, then put its vector at its layer (its only one when none is given);
    the vectors, their layers and notes."""
    vectors: list[SteeringVector] = []
    layers: list[int] = []
    notes: list[str] = []
    for it in items:
        _check_item(it, spec, sampled)
        layer = it.layer if it.layer is not None else it.vector.layers[0]
        check(
            it.layer is not None or len(it.vector.layers) == 1,
            f"vector '{it.label}' has layers {it.vector.layers}; choose one with --layer",
        )
        vec, note = vector_at_layer(model, it.vector, layer)
        notes += [f"{it.label}: {note}"] if note else []
        vectors.append(vec)
        layers.append(layer)
    return vectors, layers, notes


def _coeffs(items: Sequence[ComposeItem], active: Sequence[int]) -> tuple[float, ...]:
    """One coefficient per item: its own for the ``active`` items, 0 for the rest."""
    return tuple(float(it.coeff) if k in active else 0.0 for k, it in enumerate(items))


def _conditions(items: Sequence[ComposeItem]) -> list[Condition]:
    """Unsteered, each vector alone, every pair and all together (duplicates run once)."""
    n = len(items)
    runs: dict[tuple[float, ...], str] = {_coeffs(items, []): "unsteered"}
    for k in range(n):
        runs.setdefault(_coeffs(items, [k]), f"{items[k].label} alone")
    for i, j in itertools.combinations(range(n), 2):
        runs.setdefault(_coeffs(items, [i, j]), f"{items[i].label} + {items[j].label}")
    runs.setdefault(_coeffs(items, range(n)), "all together")
    return [Condition(label, c) for c, label in runs.items()]


def _effect_samples(r: ConditionResult, key: str) -> np.ndarray:
    """Per-sample effect on ``key``: the paired difference from unsteered where there is one."""
    return r.deltas[key] if key in r.deltas else r.rows[key]


def _ci_json(e: Estimate | None, flip: bool = False) -> list[float] | None:
    """``[low, high]`` of a ratio estimate, or of ``1 - ratio`` with ``flip``."""
    if e is None:
        return None
    return [1.0 - e.high, 1.0 - e.low] if flip else [e.low, e.high]


def _summary(
    items: Sequence[ComposeItem],
    by: dict[tuple[float, ...], ConditionResult],
    metrics: list[str],
) -> dict[str, Any]:
    """Each vector's own effect alone, in pairs and all together, summarised (:func:`summarize`),
    with paired bootstrap intervals of retention and interference."""
    n = len(items)

    def effect(k: int, active: Sequence[int]) -> Estimate:
        return by[_coeffs(items, active)].delta(metrics[k])

    def ratio(k: int, active: Sequence[int]) -> Estimate | None:
        num = _effect_samples(by[_coeffs(items, active)], metrics[k])
        return bootstrap_ratio(num, _effect_samples(by[_coeffs(items, [k])], metrics[k]))

    alone = [effect(k, [k]) for k in range(n)]
    combined = [effect(k, range(n)) for k in range(n)]
    pairs = [[effect(i, [i, j]) if i != j else alone[i] for j in range(n)] for i in range(n)]
    out = summarize(alone, combined, pairs)
    out["retention_ci"] = [_ci_json(ratio(k, range(n))) for k in range(n)]
    out["interference_ci"] = [
        [None if i == j else _ci_json(ratio(i, [i, j]), flip=True) for j in range(n)]
        for i in range(n)
    ]
    return out


def _control_conditions(
    items: Sequence[ComposeItem], ctrl_sets: list[tuple[list[Control], list[str]]]
) -> tuple[list[Condition], dict[tuple[int, int, int], Condition]]:
    """Conditions with control ``k`` of vector ``j`` in j's place: with each other vector i
    alone (key ``(i, j, k)``) and, for three or more vectors, with all the others (key
    ``(-1, j, k)``). Returns the unique conditions and the lookup."""
    n = len(items)
    offsets = np.cumsum([0] + [len(cs) for cs, _ in ctrl_sets]).tolist()
    n_ctrl = offsets[-1]
    runs: dict[tuple[float, ...], Condition] = {}
    lookup: dict[tuple[int, int, int], Condition] = {}
    for j, (cs, _) in enumerate(ctrl_sets):
        for k, c in enumerate(cs):
            slot = [0.0] * n_ctrl
            slot[offsets[j] + k] = float(items[j].coeff)
            with_sets = [(i, [i]) for i in range(n) if i != j]
            if n > 2:
                with_sets.append((-1, [i for i in range(n) if i != j]))
            for key_i, active in with_sets:
                coeffs = _coeffs(items, active) + tuple(slot)
                label = " + ".join([items[a].label for a in active] + [f"control {c.label}"])
                cond = runs.setdefault(coeffs, Condition(label, coeffs))
                lookup[(key_i, j, k)] = cond
    return list(runs.values()), lookup


def _controls(
    model: Model,
    items: Sequence[ComposeItem],
    entries: list[PlanEntry],
    ctrl_sets: list[tuple[list[Control], list[str]]],
    metrics: list[str],
    spec: MeasureSpec,
    base: Any,
    by: dict[tuple[float, ...], ConditionResult],
    sampled: bool,
) -> dict[str, Any]:
    """Retention and interference with controls composed in each vector's place."""
    n = len(items)
    k_max = max(len(cs) for cs, _ in ctrl_sets)
    out: dict[str, Any] = {
        "k": k_max,
        "kind": [cs[0].kind if cs else None for cs, _ in ctrl_sets],
        "items": [[c.to_json() for c in cs] for cs, _ in ctrl_sets],
        "retention": [[] for _ in range(n)],
        "interference": [[[] for _ in range(n)] for _ in range(n)],
    }
    if k_max == 0:
        return out
    conds, lookup = _control_conditions(items, ctrl_sets)
    sentiment = any(it.score == "sentiment" for it in items)
    cspec = replace(
        spec,
        on_target=[],
        off_target=[],
        neutral=[],
        n=spec.n if (sampled or sentiment) else 0,
    )
    results, _ = measure(model, entries, conds, cspec, baseline=base)
    res = {c.coeffs: r for c, r in zip(conds, results, strict=True)}
    alone = [by[_coeffs(items, [i])].delta(metrics[i]).value for i in range(n)]

    def kept(i: int, cond: Condition) -> float | None:
        a = alone[i]
        return None if abs(a) < 1e-6 else res[cond.coeffs].delta(metrics[i]).value / a

    for (i, j, _k), cond in sorted(lookup.items()):
        targets = [t for t in range(n) if t != j] if i == -1 else [i]
        for t in targets:
            r = kept(t, cond)
            if r is None:
                continue
            if i != -1:
                out["interference"][t][j].append(1.0 - r)
            if i == -1 or n == 2:
                out["retention"][t].append(r)
    return out


def _verdicts(
    items: Sequence[ComposeItem], summary: dict[str, Any], ctrl: dict[str, Any]
) -> list[str]:
    """Per vector: its retention, interval, and where it falls among its controls' retention."""
    out = []
    for i, it in enumerate(items):
        r, ci = summary["retention"][i], summary["retention_ci"][i]
        head = f"{it.label} keeps {r:.2f}"
        head += f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else " (its alone effect is ~0)"
        head += " of its effect in the combination"
        cr = ctrl["retention"][i]
        if not cr or ci is None:
            out.append(head + ("; no controls were run" if not cr else ""))
            continue
        lo, hi = min(cr), max(cr)
        tail = f"; with controls in its partners' place it keeps {lo:.2f} to {hi:.2f}"
        if ci[1] < lo:
            tail += ": its partners interfere beyond what control vectors do"
        elif ci[0] > hi:
            tail += ": its partners help it beyond what control vectors do"
        else:
            tail += ": the same, so what its partners do to it is what any such vector does"
        out.append(head + tail)
    return out


def _damage(r: ConditionResult) -> dict[str, Any]:
    return {k: r.estimate(k).to_json() for k in ("off_target_ratio", "kl") if k in r.rows}


def _damage_json(all_run: ConditionResult, alone_runs: list[ConditionResult]) -> dict[str, Any]:
    """Damage of the combination and of each vector alone, and their paired difference."""
    versus = []
    for r in alone_runs:
        if "off_target_ratio" in r.rows:
            d = estimate_diff(all_run.rows["off_target_ratio"], r.rows["off_target_ratio"])
            versus.append(d.to_json())
    return {
        "combined": _damage(all_run),
        "alone": [_damage(r) for r in alone_runs],
        "combined_minus_alone_off_target": versus,
    }


def _samples(
    conds: list[Condition], results: list[ConditionResult], spec: MeasureSpec
) -> list[dict[str, Any]]:
    """The first sampled completion of the first two prompts under every run."""
    shown = spec.prompts[:2] if spec.n > 0 else []
    return [
        {
            "run": c.label,
            "completions": [
                {"prompt": p, "text": r.completions[i * spec.n]} for i, p in enumerate(shown)
            ],
        }
        for c, r in zip(conds, results, strict=True)
    ]
