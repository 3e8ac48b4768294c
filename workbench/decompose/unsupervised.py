"""Unsupervised steering vectors end to end: learn directions that most move a later layer
(MELBO or the Jacobian), then calibrate, label and rank both signs of each as candidates, the
same :class:`~workbench.decompose.discover.Discovery` the decompositions give.

The API behind ``workbench discover --method melbo|jacobian`` and the dashboard's learned-vectors
page::

    found = discover_unsupervised(model, "melbo", source=6, k=8)   # doctest: +SKIP
    found.candidates[0].label, found.extra["learned"]["displacement_vs_random"]["ratio_ci"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workbench.decompose.discover import (
    Discovery,
    build_candidate,
    measure_units,
    ranked_discovery,
)
from workbench.decompose.learned import (
    DEFAULT_MEASURE,
    DEFAULT_RADIUS,
    Learned,
    displacement_vs_random,
)
from workbench.decompose.trials import TrialSettings
from workbench.errors import check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.vectors.build import assemble

METHODS = ("melbo", "jacobian")
MAX_PROMPTS = 64  # of a caller's own prompts, by default: each step runs k x prompts rows


def default_target(model: Model, source: int) -> int:
    """Halfway from ``source`` to the last layer (at least one layer on)."""
    return min(model.n_layers - 1, source + max(1, (model.n_layers - 1 - source) // 2))


def learn(
    model: Model,
    method: str,
    *,
    source: int,
    target: int | None = None,
    k: int = 8,
    radius: float = DEFAULT_RADIUS,
    iterations: int | None = None,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int | None = None,
    seed: int = 0,
    measure: str = DEFAULT_MEASURE,
) -> Learned:
    """``k`` directions at ``resid_pre`` of ``source`` by ``method`` (``melbo`` or
    ``jacobian``); ``target`` defaults to :func:`default_target`, ``iterations`` to the
    method's own default (100 Adam steps, 20 power iterations). The first ``n_prompts`` prompts
    are used; ``None``: 12 of the built-in instructions, or up to 64 of the caller's (each
    training step runs ``k`` x prompts rows)."""
    from workbench.decompose.jacobian import train_jacobian
    from workbench.decompose.melbo import train_melbo

    check(method in METHODS, f"unknown learned method {method!r}: use melbo or jacobian")
    target = default_target(model, source) if target is None else target
    common: dict[str, Any] = {
        "source": source,
        "target": target,
        "k": k,
        "radius": radius,
        "prompts": prompts,
        "n_prompts": n_prompts or (12 if prompts is None else MAX_PROMPTS),
        "seed": seed,
        "measure": measure,
    }
    if iterations is not None:
        common["iterations"] = iterations
    return train_melbo(model, **common) if method == "melbo" else train_jacobian(model, **common)


def discover_unsupervised(
    model: Model,
    method: str,
    *,
    settings: TrialSettings | None = None,
    rank_by: str | None = None,
    **learn_args: Any,
) -> Discovery:
    """:func:`learn`, then :func:`discover_learned` (nothing saved: see ``Discovery.save``)."""
    return discover_learned(
        model, learn(model, method, **learn_args), settings=settings, rank_by=rank_by
    )


LEARNED_RANKINGS = ("combined", "effect")


def discover_learned(
    model: Model,
    learned: Learned,
    *,
    settings: TrialSettings | None = None,
    rank_by: str | None = None,
) -> Discovery:
    """Candidates from directions learned on the model (MELBO, Jacobian), both signs of each.

    Calibration, effects, controls, labels and saving are those of :func:`discover`. There is no
    store, so no store-side statistics (variance and between-document shares, documents):
    ``combined`` ranking is ``effect_vs_random`` alone, and the store-based rankings are refused.
    The vectors' recipes say how they were learned (method, layers, R, prompts, seed), and
    ``extra["learned"]["displacement_vs_random"]`` how much more they move the target layer
    than norm-matched random directions (:func:`~workbench.decompose.learned.displacement_vs_random`).
    """
    s = settings or TrialSettings()
    rank_by = rank_by or "combined"
    check(
        rank_by in LEARNED_RANKINGS,
        f"--rank-by {rank_by} needs store statistics that {learned.method} vectors lack: use "
        f"one of {', '.join(LEARNED_RANKINGS)}",
    )
    layer = learned.source
    site = Site("resid_pre", layer).check(model)
    k = learned.directions.shape[0]
    signs = [(i, sg) for i in range(k) for sg in (1, -1)]
    vectors = [
        assemble(
            model,
            {layer: sg * learned.directions[i]},
            site=site.kind,
            method=learned.method,
            recipe={**learned.recipe, "index": i, "sign": sg},
            info={"index": i, "sign": sg, "objective": learned.objective[i]},
        )
        for i, sg in signs
    ]
    units = torch.stack([v.directions[layer] for v in vectors])  # (2k, d_model)
    norm = vectors[0].layer_norms[layer]
    m = measure_units(model, site, units, norm, s)
    candidates = [
        build_candidate(c, i, sg, vectors[c], model, site, m, None, s, rank_by, None)
        for c, (i, sg) in enumerate(signs)
    ]
    recipe = {key: v for key, v in learned.recipe.items() if key != "prompt_texts"}
    moved = displacement_vs_random(model, learned)
    return ranked_discovery(
        model,
        site,
        learned.method,
        candidates,
        m,
        norm,
        s,
        rank_by,
        extra={
            "learned": {
                **recipe,
                "objective": learned.objective,
                "displacement_vs_random": moved,
                "seconds": learned.seconds,
                "n_prompts": len(learned.recipe.get("prompt_texts", [])),
            }
        },
    )
