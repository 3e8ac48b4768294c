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
of each vector alone. ``orthogonalize`` removes from each vector its components along the earlier
vectors at the same layer first (Gram-Schmidt in the order given).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from workbench.errors import check
from workbench.experiments.composition_math import cosine_matrix, interference_matrix, retention
from workbench.measure.effects import (
    Condition,
    ConditionResult,
    MeasureSpec,
    Targets,
    measure,
    vector_at_layer,
)
from workbench.measure.stats import Estimate, estimate_diff
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
) -> dict[str, Any]:
    """Measure the vectors alone, in pairs and all together; return the compose JSON.

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
    items = _labelled(items)  # copies: the caller's items keep their (empty) labels
    vectors, layers, notes = _prepare(model, items, spec, sampled)
    if orthogonalize:
        vectors = _orthogonalize(vectors, layers)
        notes.append("each vector was orthogonalized against the earlier ones at its layer")
    entries = [
        PlanEntry(v, it.coeff, layers=[layer], position=it.position, units=units, label=it.label)
        for v, it, layer in zip(vectors, items, layers, strict=True)
    ]
    conds = _conditions(items)
    results, _ = measure(model, entries, conds, spec)
    by = {c.coeffs: r for c, r in zip(conds, results, strict=True)}
    metrics = [it.metric(sampled) for it in items]
    n = len(items)
    all_run = by[_coeffs(items, range(n))]
    alone_runs = [by[_coeffs(items, [k])] for k in range(n)]
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
        **_summary(items, by, metrics),
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


def _summary(
    items: Sequence[ComposeItem],
    by: dict[tuple[float, ...], ConditionResult],
    metrics: list[str],
) -> dict[str, Any]:
    """Each vector's own effect alone, in pairs and all together, summarised (:func:`summarize`)."""
    n = len(items)

    def effect(k: int, active: Sequence[int]) -> Estimate:
        return by[_coeffs(items, active)].delta(metrics[k])

    alone = [effect(k, [k]) for k in range(n)]
    combined = [effect(k, range(n)) for k in range(n)]
    pairs = [[effect(i, [i, j]) if i != j else alone[i] for j in range(n)] for i in range(n)]
    return summarize(alone, combined, pairs)


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
