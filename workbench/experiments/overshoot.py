"""The overshoot finder: where along a coefficient sweep steering starts, peaks and breaks.

ActAdd's coefficient sweeps show the usual shape: a small coefficient does nothing, a moderate
one steers cleanly, and past some point (+3 for the layer-16 wedding vector) off-target
perplexity rises and completions degenerate. For one layer's curve this module reports

* ``onset``: the smallest coefficient whose effect differs from the unsteered (coefficient 0)
  effect beyond the interval, in the wanted direction;
* ``best``: the coefficient with the largest such effect while damage stays under threshold;
* ``breakdown``: the smallest coefficient whose damage passes a threshold.

"Smallest" means closest to 0. Damage is the off-target perplexity ratio (steered/unsteered,
above ``max_ppl_ratio`` is damage) and distinct-2 relative to unsteered (below
``min_distinct_ratio`` is damage); see :class:`OvershootThresholds`.

Direction. ``direction=+1`` when a larger effect is better (more wedding words), ``-1`` when a
smaller one is (less toxicity); improvement is ``direction * (effect - effect at 0)``.
Coefficients may be negative (subtracting the vector). A sweep over both signs is two curves
sharing the point 0; the finder analyses one ``side`` and, left to itself, picks the side whose
best improvement is larger, i.e. the sign along which the vector actually steers the wanted way.

>>> from workbench.measure.stats import Estimate
>>> e = lambda v: Estimate(v, v - 0.1, v + 0.1, 20)
>>> o = find_overshoot(
...     [0.0, 1.0, 2.0, 4.0, 8.0],
...     [e(0.0), e(0.05), e(1.0), e(2.0), e(3.0)],
...     ppl_ratios=[e(1.0), e(1.0), e(1.05), e(1.1), e(2.0)],
... )
>>> o.onset, o.best, o.breakdown
(2.0, 4.0, 8.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench.errors import check
from workbench.measure.stats import Estimate, differs

__all__ = ["Overshoot", "OvershootThresholds", "find_overshoot"]


@dataclass(frozen=True)
class OvershootThresholds:
    """Where damage starts.

    ``max_ppl_ratio``: off-target steered/unsteered perplexity above this is damage; must be
    >= 1 (1.2 allows a 20% rise). ``min_distinct_ratio``: distinct-2 relative to unsteered below
    this is damage; must be in (0, 1] (0.8 allows a 20% drop).

    >>> OvershootThresholds(max_ppl_ratio=1.5).to_json()
    {'max_ppl_ratio': 1.5, 'min_distinct_ratio': 0.8}
    """

    max_ppl_ratio: float = 1.2
    min_distinct_ratio: float = 0.8

    def __post_init__(self) -> None:
        check(
            math.isfinite(self.max_ppl_ratio) and self.max_ppl_ratio >= 1.0,
            f"max_ppl_ratio must be a finite number >= 1 (1.2 allows a 20% perplexity rise), "
            f"got {self.max_ppl_ratio}",
        )
        check(
            0.0 < self.min_distinct_ratio <= 1.0,
            f"min_distinct_ratio must be in (0, 1] (0.8 allows a 20% drop in distinct-2), "
            f"got {self.min_distinct_ratio}",
        )

    def to_json(self) -> dict[str, float]:
        """Plain dict for JSON reports."""
        return asdict(self)


@dataclass(frozen=True)
class Overshoot:
    """Result of :func:`find_overshoot`; each coefficient is ``None`` when not reached."""

    onset: float | None
    best: float | None
    breakdown: float | None
    side: int
    direction: int
    thresholds: OvershootThresholds

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {
            "onset": self.onset,
            "best": self.best,
            "breakdown": self.breakdown,
            "side": self.side,
            "direction": self.direction,
            "thresholds": self.thresholds.to_json(),
        }


def _check_curve(
    coefficients: Sequence[float],
    effects: Sequence[Estimate],
    ppl_ratios: Sequence[Estimate] | None,
    distinct_ratios: Sequence[float] | None,
) -> int:
    """Validate the curve; return the index of coefficient 0."""
    coefs = [float(c) for c in coefficients]
    check(len(coefs) >= 2, "a curve needs coefficient 0 and at least one other coefficient")
    check(all(math.isfinite(c) for c in coefs), "coefficients must be finite numbers")
    check(
        all(a < b for a, b in zip(coefs, coefs[1:], strict=False)),
        "coefficients must be sorted ascending without repeats; sort the sweep first",
    )
    check(0.0 in coefs, "coefficients must include 0, the unsteered baseline; add it to the sweep")
    for name, values in (("effects", effects), ("ppl_ratios", ppl_ratios)):
        if values is not None:
            check(
                len(values) == len(coefs),
                f"{name} has {len(values)} entries for {len(coefs)} coefficients; give one each",
            )
            check(
                all(isinstance(v, Estimate) for v in values),
                f"{name} must be Estimate objects; build them with workbench.measure.stats.estimate",
            )
    if distinct_ratios is not None:
        check(
            len(distinct_ratios) == len(coefs),
            f"distinct_ratios has {len(distinct_ratios)} entries for {len(coefs)} coefficients; "
            "give one each",
        )
        check(
            all(math.isfinite(float(d)) for d in distinct_ratios),
            "distinct_ratios must be finite; divide by a nonzero unsteered distinct-2",
        )
    check(
        ppl_ratios is not None or distinct_ratios is not None,
        "pass ppl_ratios or distinct_ratios; without a damage measure there is no breakdown",
    )
    return coefs.index(0.0)


def find_overshoot(
    coefficients: Sequence[float],
    effects: Sequence[Estimate],
    *,
    ppl_ratios: Sequence[Estimate] | None = None,
    distinct_ratios: Sequence[float] | None = None,
    thresholds: OvershootThresholds | None = None,
    direction: int = 1,
    side: int | None = None,
) -> Overshoot:
    """Find onset, best and breakdown coefficients on one layer's sweep.

    ``coefficients`` are sorted ascending and include 0. Per coefficient: ``effects[i]`` the
    steering effect (any unit; paired steered-minus-unsteered estimates work too, their value at
    0 is then 0), ``ppl_ratios[i]`` the off-target perplexity ratio, ``distinct_ratios[i]`` the
    distinct-2 at that coefficient divided by distinct-2 at 0. Either damage measure may be left
    out, not both. Damage compares point values with the thresholds; onset and best need the
    effect to differ from the coefficient-0 effect beyond both intervals
    (:func:`workbench.measure.stats.differs`) in the wanted ``direction``. ``best`` is searched only
    closer to 0 than ``breakdown``; ties go to the smaller coefficient.
    """
    check(direction in (1, -1), f"direction must be 1 (larger is better) or -1, got {direction}")
    check(side in (None, 1, -1), f"side must be 1 (positive coefficients), -1 or None, got {side}")
    limits = thresholds if thresholds is not None else OvershootThresholds()
    zero = _check_curve(coefficients, effects, ppl_ratios, distinct_ratios)
    coefs = [float(c) for c in coefficients]
    base = effects[zero]

    def improvement(i: int) -> float:
        return direction * (effects[i].value - base.value)

    def steers(i: int) -> bool:
        return improvement(i) > 0 and differs(effects[i], base)

    def damaged(i: int) -> bool:
        too_perplexed = ppl_ratios is not None and ppl_ratios[i].value > limits.max_ppl_ratio
        too_repetitive = (
            distinct_ratios is not None and float(distinct_ratios[i]) < limits.min_distinct_ratio
        )
        return too_perplexed or too_repetitive

    # Walk each side outward from 0, so "first" means "smallest in magnitude".
    outward = {1: list(range(zero + 1, len(coefs))), -1: list(range(zero - 1, -1, -1))}
    if side is None:
        present = [s for s in (1, -1) if outward[s]]
        side = max(present, key=lambda s: max(improvement(i) for i in outward[s]))
    check(bool(outward[side]), f"the curve has no coefficients on side {side}; pass the other")
    walk = outward[side]

    onset = next((i for i in walk if steers(i)), None)
    breakdown = next((i for i in walk if damaged(i)), None)
    usable = walk if breakdown is None else walk[: walk.index(breakdown)]
    candidates = [i for i in usable if steers(i)]
    # max() keeps the first of equal improvements, the coefficient closest to 0.
    best = max(candidates, key=improvement) if candidates else None

    def coef(i: int | None) -> float | None:
        return None if i is None else coefs[i]

    return Overshoot(coef(onset), coef(best), coef(breakdown), side, direction, limits)
