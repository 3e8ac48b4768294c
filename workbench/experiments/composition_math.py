"""How steering vectors combine: retention, pairwise interference and cosine similarity.

When several vectors are applied at once (ActAdd's "Love" - "Hate" plus " wedding" - " "), each
vector's own metric is measured twice: with the vector alone and in the combined run.

* retention ``= combined / alone``: 1 means the vector keeps its full effect in company, 0 that
  it is wiped out, above 1 that the others help it.
* interference ``[i, j] = 1 - (effect of i applied with j) / (effect of i alone)``: 0 means j
  leaves i's effect alone, 1 that j cancels it, negative that j amplifies it. The diagonal is 0.

Both divide by the alone effect, so a vector that does nothing alone has no meaningful ratio.
Where ``|alone| < min_alone`` the ratio is reported as the neutral value (retention 1,
interference 0) and flagged in ``unreliable``, rather than as NaN or a huge number. Set
``min_alone`` in the metric's units, e.g. the half-width of the alone effect's interval.

>>> r = retention(combined=[1.0, 0.0], alone=[2.0, 0.0])
>>> r.values.tolist(), r.unreliable.tolist()
([0.5, 1.0], [False, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import check

__all__ = [
    "AdditiveEffects",
    "Interference",
    "Retention",
    "additive_model_effects",
    "cosine_matrix",
    "interference_matrix",
    "retention",
    "retention_warnings",
]

Effects = Sequence[float] | torch.Tensor


def _vector(values: Effects, name: str) -> torch.Tensor:
    out = torch.as_tensor(values, dtype=torch.float64).reshape(-1)  # (n,)
    check(out.numel() > 0, f"{name} is empty; pass one effect per vector")
    check(bool(torch.isfinite(out).all()), f"{name} contains NaN or inf; re-measure the effects")
    return out


def _reliable(alone: torch.Tensor, min_alone: float) -> torch.Tensor:
    check(min_alone >= 0.0, f"min_alone must be >= 0, got {min_alone}")
    return alone.abs() >= max(min_alone, torch.finfo(torch.float64).tiny)  # (n,)


@dataclass(frozen=True)
class Retention:
    """Per-vector retention ``(n,)`` and the ``(n,)`` flag of unmeasurable ones."""

    values: torch.Tensor
    unreliable: torch.Tensor

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {"values": self.values.tolist(), "unreliable": self.unreliable.tolist()}


@dataclass(frozen=True)
class Interference:
    """Interference matrix ``(n, n)``; ``unreliable[i]`` flags row i (alone effect near 0)."""

    matrix: torch.Tensor
    unreliable: torch.Tensor

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {"matrix": self.matrix.tolist(), "unreliable": self.unreliable.tolist()}


def retention(combined: Effects, alone: Effects, *, min_alone: float = 1e-6) -> Retention:
    """``combined[i] / alone[i]`` per vector, with near-zero alone effects flagged.

    ``combined[i]`` is vector i's own metric measured on the run with all vectors applied.

    >>> retention([1.0, 3.0], [1.0, 2.0]).values.tolist()
    [1.0, 1.5]
    """
    comb, solo = _vector(combined, "combined"), _vector(alone, "alone")
    check(
        comb.shape == solo.shape,
        f"combined has {comb.numel()} effects but alone has {solo.numel()}; give one per vector",
    )
    ok = _reliable(solo, min_alone)  # (n,)
    values = torch.where(ok, comb / torch.where(ok, solo, 1.0), 1.0)  # (n,)
    return Retention(values=values, unreliable=~ok)


def interference_matrix(
    pair_effects: Sequence[Sequence[float]] | torch.Tensor,
    alone: Effects,
    *,
    min_alone: float = 1e-6,
) -> Interference:
    """``1 - pair_effects[i][j] / alone[i]`` for each ordered pair; diagonal 0.

    ``pair_effects[i][j]`` is vector i's metric on the run with vectors i and j applied
    together; its diagonal is ignored.

    >>> interference_matrix([[0.0, 0.5], [2.0, 0.0]], [1.0, 2.0]).matrix.tolist()
    [[0.0, 0.5], [0.0, 0.0]]
    """
    solo = _vector(alone, "alone")  # (n,)
    n = solo.numel()
    pairs = torch.as_tensor(pair_effects, dtype=torch.float64)  # (n, n)
    check(
        pairs.shape == (n, n),
        f"pair_effects must be ({n}, {n}) for {n} vectors, got {tuple(pairs.shape)}",
    )
    off_diagonal = ~torch.eye(n, dtype=torch.bool)  # (n, n)
    check(
        bool(torch.isfinite(pairs[off_diagonal]).all()),
        "pair_effects contains NaN or inf off the diagonal; re-measure those pairs",
    )
    ok = _reliable(solo, min_alone)  # (n,)
    ratio = pairs / torch.where(ok, solo, 1.0).unsqueeze(1)  # (n, n), row i divided by alone[i]
    matrix = torch.where(ok.unsqueeze(1) & off_diagonal, 1.0 - ratio, 0.0)  # (n, n)
    return Interference(matrix=matrix, unreliable=~ok)


def cosine_matrix(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pairwise cosine similarity ``(n, n)`` float64 of flattened vectors; diagonal exactly 1.

    Vectors of any shape are flattened (a ``(pos, d_model)`` ActAdd vector compares position by
    position) and must all have the same number of elements.

    >>> cosine_matrix([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]).round(decimals=4)
    tensor([[1.0000, 0.7071],
            [0.7071, 1.0000]], dtype=torch.float64)
    """
    check(len(vectors) > 0, "cosine_matrix got no vectors; pass at least one")
    flat = [torch.as_tensor(v).detach().double().reshape(-1) for v in vectors]
    sizes = sorted({v.numel() for v in flat})
    check(
        len(sizes) == 1,
        f"vectors have different sizes {sizes}; compare vectors from the same hook point",
    )
    stacked = torch.stack(flat)  # (n, d)
    norms = stacked.norm(dim=1)  # (n,)
    zero = (norms == 0).nonzero().flatten().tolist()
    check(not zero, f"vectors {zero} are all zeros, so their direction is undefined; drop them")
    unit = stacked / norms.unsqueeze(1)  # (n, d)
    # Clamp and pin the diagonal: rounding can give 1.0000000002, which breaks arccos downstream.
    cos = (unit @ unit.T).clamp(-1.0, 1.0)  # (n, n)
    return cos.fill_diagonal_(1.0)


@dataclass(frozen=True)
class AdditiveEffects:
    """Effects under the linear model of :func:`additive_model_effects`."""

    alone: torch.Tensor  # (n,)
    combined: torch.Tensor  # (n,)
    pairs: torch.Tensor  # (n, n)


def additive_model_effects(vectors: torch.Tensor, readouts: torch.Tensor) -> AdditiveEffects:
    """Synthetic effects where steering adds linearly, for testing composition measures.

    Metric i reads ``readouts[i] . (sum of applied vectors)``. Vectors that are orthogonal to
    each other's readouts compose perfectly (retention 1, interference 0); a vector j equal to
    ``-vectors[i]`` cancels i (interference ``[i, j]`` = 1).

    >>> eye = torch.eye(2)
    >>> fx = additive_model_effects(eye, eye)
    >>> retention(fx.combined, fx.alone).values.tolist()
    [1.0, 1.0]
    """
    check(
        vectors.dim() == 2 and vectors.shape == readouts.shape,
        f"vectors and readouts must both be (n, d), got {tuple(vectors.shape)} and "
        f"{tuple(readouts.shape)}",
    )
    v, r = vectors.double(), readouts.double()  # (n, d) each
    reads = r @ v.T  # (n, n): reads[i, j] = metric i moved by vector j
    alone = reads.diagonal().clone()  # (n,)
    combined = reads.sum(dim=1)  # (n,)
    pairs = alone.unsqueeze(1) + reads  # (n, n): i with j
    pairs.diagonal().copy_(alone)  # i "with itself" is i alone
    return AdditiveEffects(alone=alone, combined=combined, pairs=pairs)


def retention_warnings(
    alone: Sequence[tuple[float, float]],
    retention_ci: Sequence[tuple[float, float] | None],
    *,
    max_width: float = 2.0,
) -> list[str | None]:
    """Per vector, why its retention should not be trusted (plain words), or None.

    ``alone[i]`` is the interval of vector i's effect alone, ``retention_ci[i]`` the interval of
    its retention (None when the alone effect was too small to divide by). Retention divides by
    the alone effect, so an alone effect whose interval includes 0 makes any ratio, -7.37 as
    readily as 1.0, noise; so does a retention interval wider than ``max_width``.

    >>> retention_warnings([(0.5, 1.0), (-0.1, 0.2)], [(0.8, 1.1), (-9.0, 4.0)])[0] is None
    True
    """
    check(
        len(alone) == len(retention_ci),
        f"{len(alone)} alone intervals for {len(retention_ci)} retention intervals",
    )
    out: list[str | None] = []
    for (lo, hi), ci in zip(alone, retention_ci, strict=True):
        if ci is None:
            out.append("unreliable: its effect alone is about 0, so there is nothing to retain")
        elif lo <= 0.0 <= hi:
            out.append(
                f"unreliable: its effect alone [{lo:.3g}, {hi:.3g}] includes 0, so the ratio "
                "is noise"
            )
        elif ci[1] - ci[0] > max_width:
            out.append(f"unreliable: the retention interval [{ci[0]:.2f}, {ci[1]:.2f}] is too wide")
        else:
            out.append(None)
    return out
