"""Building steering vectors: prompt pairs, mean difference, probe, random control; rebuilds.

Every builder returns a :class:`~workbench.vectors.vector.SteeringVector` that records its ``method``,
a ``recipe`` from which :func:`rebuild` can make the same kind of vector at another layer, the
``layer_norms`` of the model at its layers (for coefficients in residual-norm units) and an
``info`` dict of diagnostics (counts, separation, probe accuracies); the builders make it with
:func:`~workbench.vectors.assemble.assemble`, which records the model and its norms.

- :func:`from_prompts`: ActAdd: activations of prompt pairs, per position.
- :func:`from_datasets`: mean difference of two text sets (ITI's mass-mean shift, CAA).
- :func:`from_probe`: logistic-regression probe direction, with its held-out accuracy next to
  that of the mean-difference direction.
- :func:`random_like`: a norm-matched random control.
- :func:`~workbench.vectors.dictionary.from_component`, :func:`~workbench.vectors.dictionary.from_sae_feature`
  and :func:`~workbench.vectors.iti.from_iti` live in their own modules and are re-exported here.

Example:
    >>> model = load_model("smollm2-135m")                                   # doctest: +SKIP
    >>> love = from_prompts(model, "Love", "Hate", layers=6)                 # doctest: +SKIP
    >>> wed = from_datasets(model, "builtin:wedding", "builtin:unrelated", 6)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.activations.collect import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_TOKENS,
    TextSpec,
    check_layers,
    check_positions,
    collect_contrast,
    load_contrast,
    mean_residual_norms,
    texts_from_recipe,
    texts_recipe,
)
from workbench.errors import WorkbenchError, check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.vectors.assemble import assemble
from workbench.vectors.dictionary import from_component, from_sae_feature
from workbench.vectors.iti import from_iti
from workbench.vectors.probe import auroc, fit_probe, mean_diff_classifier, split_texts
from workbench.vectors.prompts import check_site, from_prompts
from workbench.vectors.vector import SteeringVector

__all__ = [
    "from_component",
    "from_datasets",
    "from_iti",
    "from_probe",
    "from_prompts",
    "from_sae_feature",
    "mean_residual_norms",
    "random_like",
    "rebuild",
]

# --------------------------------------------------------------------------- text sets


def from_datasets(
    model: Model,
    pos_texts: TextSpec,
    neg_texts: TextSpec,
    layers: int | Sequence[int],
    positions: str = "last",
    site: str = "resid_pre",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> SteeringVector:
    """Mean difference of two text sets, ``mean(pos rows) - mean(neg rows)``, ``(d_model,)``.

    This is ITI's mass-mean shift and CAA's vector. ``positions``: ``last`` token, ``mean`` over
    tokens, or ``all`` tokens (each token one row). The sets need not be paired or equal in
    size. ``info["separation"][layer]`` has the AUROC and midpoint-threshold accuracy of the
    training rows projected on the direction (how well it separates the sets it was made from).
    """
    layer_list = check_layers(model, layers)
    check_positions(positions)
    check_site(site)
    sites = [Site(site, layer) for layer in layer_list]
    pos, neg = load_contrast(pos_texts, neg_texts)
    a, b = collect_contrast(
        model, pos, neg, sites, positions, batch_size=batch_size, max_tokens=max_tokens
    )
    directions: dict[int, torch.Tensor] = {}
    separation: dict[str, dict[str, float]] = {}
    for s in sites:
        X = torch.cat([a.rows[s], b.rows[s]]).double().numpy()  # (n_rows, d_model)
        y = np.concatenate([np.ones(len(a.rows[s])), np.zeros(len(b.rows[s]))]).astype(int)
        md, thr = mean_diff_classifier(X, y)
        directions[s.layer] = torch.from_numpy(md).float()
        proj = X @ md  # (n_rows,)
        separation[str(s.layer)] = {
            "auroc": round(auroc(proj, y), 4),
            "accuracy": round(float(((proj > thr).astype(int) == y).mean()), 4),
        }
    return assemble(
        model,
        directions,
        site=site,
        method="mean_diff",
        recipe={
            "pos": texts_recipe(pos_texts, pos),
            "neg": texts_recipe(neg_texts, neg),
            "layers": layer_list,
            "positions": positions,
            "site": site,
            "max_tokens": max_tokens,
        },
        info={
            "n_pos_texts": len(pos),
            "n_neg_texts": len(neg),
            "n_pos_rows": int(a.owner.numel()),
            "n_neg_rows": int(b.owner.numel()),
            "n_truncated": a.n_truncated + b.n_truncated,
            "positions": positions,
            "separation": separation,
        },
    )


def from_probe(
    model: Model,
    pos_texts: TextSpec,
    neg_texts: TextSpec,
    layer: int,
    positions: str = "last",
    *,
    site: str = "resid_pre",
    test_size: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> SteeringVector:
    """Logistic-regression probe direction at one layer, with held-out accuracies.

    Texts are split (stratified, ``seed``) into train and held-out parts; the probe and the
    mean-difference direction are both fitted on the train part and both scored as classifiers
    on the held-out part, so ``info`` holds ``probe_accuracy`` next to ``mean_diff_accuracy``
    (the comparison the ITI discussion makes), and the held-out AUROC of each. The stored direction is the probe's unit normal
    scaled to the norm of the mean difference, so coefficients mean the same for both.
    """
    model.check_layer(layer)
    check_positions(positions)
    check_site(site)
    sites = [Site(site, layer)]
    pos, neg = load_contrast(pos_texts, neg_texts)
    a, b = collect_contrast(
        model, pos, neg, sites, positions, batch_size=batch_size, max_tokens=max_tokens
    )
    train_idx, test_idx = split_texts(len(pos), len(neg), test_size, seed)
    X = torch.cat([a.rows[sites[0]], b.rows[sites[0]]]).double().numpy()  # (n_rows, d_model)
    owner = torch.cat([a.owner, b.owner + len(pos)]).numpy()  # (n_rows,) text index
    y = (owner < len(pos)).astype(int)
    tr, te = np.isin(owner, train_idx), np.isin(owner, test_idx)
    r = fit_probe(X[tr], y[tr], X[te], y[te], C=C)
    unit = r.coef / max(float(np.linalg.norm(r.coef)), 1e-12)
    direction = unit * float(np.linalg.norm(r.mean_diff))  # (d_model,)
    return assemble(
        model,
        {layer: torch.from_numpy(direction).float()},
        site=site,
        method="probe",
        recipe={
            "pos": texts_recipe(pos_texts, pos),
            "neg": texts_recipe(neg_texts, neg),
            "layers": [layer],
            "positions": positions,
            "site": site,
            "test_size": test_size,
            "seed": seed,
            "C": C,
            "max_tokens": max_tokens,
        },
        info={
            "probe_accuracy": round(r.test_accuracy, 4),
            "mean_diff_accuracy": round(r.mean_diff_test_accuracy, 4),
            "probe_auroc": round(r.test_auroc, 4),
            "mean_diff_auroc": round(r.mean_diff_test_auroc, 4),
            "probe_train_accuracy": round(r.train_accuracy, 4),
            "mean_diff_train_accuracy": round(r.mean_diff_train_accuracy, 4),
            "cosine_probe_mean_diff": round(r.cosine, 4),
            "n_train_texts": int(train_idx.size),
            "n_test_texts": int(test_idx.size),
            "n_pos_texts": len(pos),
            "n_neg_texts": len(neg),
            "positions": positions,
            "scale": "unit probe normal x norm of the mean difference",
        },
    )


# --------------------------------------------------------------------------- controls


def random_like(vector: SteeringVector, seed: int = 0) -> SteeringVector:
    """A norm-matched random control for ``vector``, as ActAdd's random-vector experiment.

    Same layers and shapes; a 1-D tensor gets a Gaussian direction of the same norm; a 2-D one
    (ActAdd rows, or ITI heads) gets one per row, each with that row's norm, so zero rows (BOS,
    unselected heads) stay zero. Each layer's draw depends only on ``(seed, layer)``.
    """
    check(isinstance(seed, int) and seed >= 0, f"seed {seed!r} must be a non-negative integer")
    out: dict[int, torch.Tensor] = {}
    for layer, t in vector.directions.items():
        rng = np.random.default_rng([seed, layer])
        g = torch.from_numpy(rng.standard_normal(tuple(t.shape))).float()
        if t.dim() == 1:
            out[layer] = g * (t.norm() / g.norm().clamp_min(1e-12))
        else:
            scale = t.norm(dim=-1, keepdim=True) / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out[layer] = g * scale  # (rows, width)
    return SteeringVector(
        directions=out,
        model=vector.model,
        d_model=vector.d_model,
        site=vector.site,
        method="random",
        recipe={
            "seed": seed,
            "source": {"method": vector.method, "recipe": vector.recipe, "site": vector.site},
        },
        layer_norms=dict(vector.layer_norms),
        info={"source": vector.describe()},
    )


# --------------------------------------------------------------------------- rebuild


def rebuild(vector: SteeringVector, model: Model, layer: int) -> SteeringVector:
    """Re-run the recipe of ``vector`` at ``layer`` (what layer sweeps use).

    Works for ``prompt_pair``, ``mean_diff``, ``probe`` and ``random`` (of one of those).
    Dictionary components, SAE features and ITI vectors are tied to where they were found; use
    ``vector.moved_to(layer)`` to apply the same tensor elsewhere.
    """
    vector.check_compatible(model.name, model.d_model)
    model.check_layer(layer)
    return _rebuild(vector.method, vector.recipe, model, layer)


def _rebuild(method: str, recipe: dict[str, Any], model: Model, layer: int) -> SteeringVector:
    try:
        if method == "prompt_pair":
            return from_prompts(model, recipe["pos"], recipe["neg"], [layer], recipe["site"])
        if method == "mean_diff":
            return from_datasets(
                model,
                texts_from_recipe(recipe["pos"], "positive texts"),
                texts_from_recipe(recipe["neg"], "negative texts"),
                [layer],
                recipe["positions"],
                recipe["site"],
                max_tokens=recipe["max_tokens"],
            )
        if method == "probe":
            return from_probe(
                model,
                texts_from_recipe(recipe["pos"], "positive texts"),
                texts_from_recipe(recipe["neg"], "negative texts"),
                layer,
                recipe["positions"],
                site=recipe["site"],
                test_size=recipe["test_size"],
                seed=recipe["seed"],
                C=recipe["C"],
                max_tokens=recipe["max_tokens"],
            )
        if method == "random":
            src = recipe["source"]
            return random_like(_rebuild(src["method"], src["recipe"], model, layer), recipe["seed"])
    except KeyError as e:
        raise WorkbenchError(
            f"the {method} vector's recipe lacks {e}; it was made by another version: build it "
            "again"
        ) from None
    raise WorkbenchError(
        f"a {method} vector cannot be rebuilt at another layer (it is tied to where it was "
        "found); use vector.moved_to(layer) to apply the same tensor there"
    )
