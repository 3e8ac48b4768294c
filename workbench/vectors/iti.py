"""Inference-Time Intervention (ITI) at the level of attention heads.

As in ITI: record every attention head's output (site ``z``, before ``W_O``) for two labelled
text sets, fit a linear probe per (layer, head) on a train split, rank heads by held-out probe
accuracy (ties broken by held-out cross-entropy), keep the top ``k``, and give each a "mass mean shift": the unit vector from the mean
negative to the mean positive output, times ``sigma``, the standard deviation of all outputs
projected on it. Adding the vector with coefficient ``alpha`` shifts each chosen head by
``alpha`` standard deviations along its direction, ITI's units.

The direction and ``sigma`` use every example, as ITI's reference code does; only the head
ranking uses the held-out split.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.activations.collect import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_TOKENS,
    TextSpec,
    check_positions,
    collect_contrast,
    load_contrast,
    texts_recipe,
)
from workbench.errors import check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.vectors.assemble import assemble
from workbench.vectors.probe import probe_heldout, split_texts
from workbench.vectors.vector import SteeringVector


def head_accuracy_table(
    Z: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    C: float = 1.0,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out probe accuracy and cross-entropy of every head.

    ``Z`` is ``(n, n_layers, n_heads, d_head)``; returns two ``(n_layers, n_heads)`` tables.
    """
    _, n_layers, n_heads, _ = Z.shape
    acc = np.zeros((n_layers, n_heads))
    loss = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        for head in range(n_heads):
            X = Z[:, layer, head]  # (n, d_head)
            acc[layer, head], loss[layer, head] = probe_heldout(
                X[train_idx], y[train_idx], X[test_idx], y[test_idx], C=C, max_iter=max_iter
            )
    return acc, loss


def select_heads(
    table: np.ndarray, k: int, tiebreak: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs of highest accuracy.

    Ties go to the lower ``tiebreak`` (held-out cross-entropy) when given, then to the earlier
    layer and head.
    """
    n = table.size
    check(1 <= k <= n, f"k={k} heads is out of range: this model has {n} heads (1..{n})")
    flat = table.reshape(-1)
    second = np.zeros(n) if tiebreak is None else tiebreak.reshape(-1)
    # lexsort sorts by the last key first: accuracy descending, then tiebreak, then index.
    order = np.lexsort((np.arange(n), second, -flat))[:k]
    n_heads = table.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def head_shift(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """ITI's shift for one head: ``(unit mass-mean direction * sigma (d_head,), sigma)``.

    ``sigma`` is the standard deviation of all rows of ``X`` ``(n, d_head)`` projected on the
    unit direction from the negative mean to the positive mean.
    """
    md = X[y == 1].mean(0) - X[y == 0].mean(0)  # (d_head,)
    norm = float(np.linalg.norm(md))
    if norm == 0.0:
        return np.zeros_like(md), 0.0
    unit = md / norm
    sigma = float((X @ unit).std())
    return unit * sigma, sigma


def head_outputs(
    model: Model,
    pos: list[str],
    neg: list[str],
    positions: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[np.ndarray, np.ndarray]:
    """Every head's output (site ``z``) at every layer for two text sets, with labels.

    Returns ``Z`` ``(n_pos + n_neg, n_layers, n_heads, d_head)`` and ``y`` ``(n,)``: 1 for the
    positive texts (first), 0 for the negative ones.
    """
    sites = [Site("z", layer) for layer in range(model.n_layers)]
    a, b = collect_contrast(
        model, pos, neg, sites, positions, batch_size=batch_size, max_tokens=max_tokens
    )
    Z = torch.stack(
        [torch.cat([a.rows[s], b.rows[s]]) for s in sites], dim=1
    ).numpy()  # (n, n_layers, n_heads, d_head)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(int)
    return Z, y


def head_directions(
    model: Model,
    Z: np.ndarray,
    y: np.ndarray,
    heads: list[tuple[int, int]],
    table: np.ndarray,
) -> tuple[dict[int, torch.Tensor], list[dict[str, float | int]]]:
    """ITI's shift for each chosen head, gathered into one ``(n_heads, d_head)`` tensor a layer.

    Returns the per-layer tensors (zeros for heads not chosen) and, per chosen head, its
    layer, head, held-out accuracy (from ``table``) and ``sigma``.
    """
    directions: dict[int, torch.Tensor] = {}
    chosen: list[dict[str, float | int]] = []
    for layer, head in heads:
        shift, sigma = head_shift(Z[:, layer, head].astype(np.float64), y)
        t = directions.setdefault(layer, torch.zeros(model.n_heads, model.d_head))
        t[head] = torch.from_numpy(shift).float()
        chosen.append(
            {
                "layer": layer,
                "head": head,
                "accuracy": round(float(table[layer, head]), 4),
                "sigma": round(sigma, 6),
            }
        )
    return directions, chosen


def _check_k(model: Model, k: int) -> None:
    n_total = model.n_layers * model.n_heads
    check(
        isinstance(k, int) and 1 <= k <= n_total,
        f"k={k} heads is out of range: {model.name} has {n_total} heads (1..{n_total})",
    )


def _rounded(table: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 4) for x in row] for row in table]


def from_iti(
    model: Model,
    pos_texts: TextSpec,
    neg_texts: TextSpec,
    k: int = 16,
    positions: str = "last",
    *,
    test_size: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 100,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> SteeringVector:
    """Head-level ITI vector (site ``z``): top-``k`` heads by held-out probe accuracy.

    One forward pass per batch records all heads at all layers. The vector has a
    ``(n_heads, d_head)`` tensor at each layer holding a chosen head (zeros for other heads);
    ``info["accuracy_table"]`` is the full ``n_layers x n_heads`` table of held-out accuracies
    (``info["loss_table"]``: held-out cross-entropy, which breaks ties in accuracy) and
    ``info["heads"]`` lists the chosen heads with their accuracy and ``sigma``.

    Example:
        >>> v = from_iti(model, "builtin:happy", "builtin:sad", k=16)   # doctest: +SKIP
        >>> v.info["heads"][0]                                           # doctest: +SKIP
        {'layer': 11, 'head': 3, 'accuracy': 0.97, 'sigma': 1.8}
    """
    check_positions(positions, ("last", "mean"))
    _check_k(model, k)
    pos, neg = load_contrast(pos_texts, neg_texts)
    train_idx, test_idx = split_texts(len(pos), len(neg), test_size, seed)
    Z, y = head_outputs(model, pos, neg, positions, batch_size=batch_size, max_tokens=max_tokens)
    table, loss = head_accuracy_table(Z, y, train_idx, test_idx, C=C, max_iter=max_iter)
    heads = select_heads(table, k, tiebreak=loss)
    directions, chosen = head_directions(model, Z, y, heads, table)
    return assemble(
        model,
        directions,
        site="z",
        method="iti",
        recipe={
            "pos": texts_recipe(pos_texts, pos),
            "neg": texts_recipe(neg_texts, neg),
            "k": k,
            "positions": positions,
            "test_size": test_size,
            "seed": seed,
            "C": C,
            "max_tokens": max_tokens,
        },
        info={
            "k": k,
            "heads": chosen,
            "accuracy_table": _rounded(table),
            "loss_table": _rounded(loss),
            "n_pos_texts": len(pos),
            "n_neg_texts": len(neg),
            "n_train_texts": int(train_idx.size),
            "n_test_texts": int(test_idx.size),
            "positions": positions,
            "units": "coefficient 1 shifts each chosen head by one standard deviation (sigma)",
        },
    )
