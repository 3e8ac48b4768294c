"""Tests for workbench.experiments.overshoot on synthetic sweep curves with known answers."""

from __future__ import annotations

import doctest
import json

import pytest

import workbench.experiments.overshoot
from workbench.errors import WorkbenchError
from workbench.experiments.overshoot import Overshoot, OvershootThresholds, find_overshoot
from workbench.measure.stats import Estimate

COEFS = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0]


def est(value: float, half: float = 0.2) -> Estimate:
    return Estimate(value, value - half, value + half, 30)


def test_monotone_effect_with_damage_jump() -> None:
    # Effect grows steadily; off-target perplexity jumps at coefficient 6.
    effects = [est(v) for v in [0.0, 0.1, 0.8, 1.5, 2.2, 2.9, 3.5, 4.0]]
    ppl = [est(r, 0.02) for r in [1.0, 1.0, 1.01, 1.03, 1.05, 1.1, 1.6, 3.0]]
    result = find_overshoot(COEFS, effects, ppl_ratios=ppl)
    assert (result.onset, result.best, result.breakdown) == (1.0, 4.0, 6.0)
    assert result.side == 1 and result.direction == 1


def test_distinct_drop_triggers_breakdown() -> None:
    effects = [est(v) for v in [0.0, 0.1, 0.8, 1.5, 2.2, 2.9, 3.5, 4.0]]
    distinct = [1.0, 1.0, 0.98, 0.95, 0.7, 0.5, 0.3, 0.2]
    result = find_overshoot(COEFS, effects, distinct_ratios=distinct)
    assert (result.onset, result.best, result.breakdown) == (1.0, 2.0, 3.0)
    relaxed = OvershootThresholds(max_ppl_ratio=1.2, min_distinct_ratio=0.4)
    result = find_overshoot(COEFS, effects, distinct_ratios=distinct, thresholds=relaxed)
    assert (result.best, result.breakdown) == (4.0, 6.0)


def test_flat_curve_has_no_onset_or_best() -> None:
    effects = [est(v) for v in [0.0, 0.05, -0.05, 0.1, 0.0, 0.1, -0.1, 0.05]]
    ppl = [est(1.0, 0.01) for _ in COEFS]
    result = find_overshoot(COEFS, effects, ppl_ratios=ppl)
    assert result.onset is None and result.best is None and result.breakdown is None


def test_best_stops_at_breakdown_even_if_damage_recovers() -> None:
    effects = [est(v) for v in [0.0, 0.1, 0.8, 1.5, 2.2, 2.9, 3.5, 4.0]]
    distinct = [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]  # a noisy dip at 3
    result = find_overshoot(COEFS, effects, distinct_ratios=distinct)
    assert (result.best, result.breakdown) == (2.0, 3.0)


def test_negative_direction_and_negative_coefficients() -> None:
    # A metric we want lower (toxicity); the vector works when subtracted.
    coefs = [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0]
    effects = [est(v) for v in [-3.0, -2.0, -1.0, 0.0, 0.5, 1.0]]
    ppl = [est(r, 0.01) for r in [1.5, 1.1, 1.0, 1.0, 1.0, 1.0]]
    result = find_overshoot(coefs, effects, ppl_ratios=ppl, direction=-1)
    assert result.side == -1
    assert (result.onset, result.best, result.breakdown) == (-1.0, -2.0, -4.0)
    # Forcing the positive side: effects move the wrong way, so nothing steers there.
    forced = find_overshoot(coefs, effects, ppl_ratios=ppl, direction=-1, side=1)
    assert (forced.onset, forced.best, forced.breakdown) == (None, None, None)


def test_paired_effects_with_zero_baseline() -> None:
    # Steered-minus-unsteered estimates: the baseline is exactly 0 with a zero-width interval.
    effects = [est(0.0, 0.0), est(0.1, 0.2), est(0.5, 0.2), est(1.0, 0.2)]
    result = find_overshoot([0.0, 1.0, 2.0, 3.0], effects, ppl_ratios=[est(1.0)] * 4)
    assert (result.onset, result.best) == (2.0, 3.0)


def test_to_json_is_serialisable() -> None:
    effects = [est(v) for v in [0.0, 1.0, 2.0]]
    result = find_overshoot([0.0, 1.0, 2.0], effects, distinct_ratios=[1.0, 1.0, 0.1])
    data = json.loads(json.dumps(result.to_json()))
    assert data["best"] == 1.0 and data["breakdown"] == 2.0
    assert data["thresholds"] == {"max_ppl_ratio": 1.2, "min_distinct_ratio": 0.8}
    assert isinstance(result, Overshoot)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_ppl_ratio": 0.9}, "max_ppl_ratio must be"),
        ({"max_ppl_ratio": float("inf")}, "max_ppl_ratio must be"),
        ({"min_distinct_ratio": 0.0}, r"min_distinct_ratio must be in \(0, 1\]"),
        ({"min_distinct_ratio": 1.5}, r"min_distinct_ratio must be in \(0, 1\]"),
    ],
)
def test_thresholds_are_validated(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(WorkbenchError, match=match):
        OvershootThresholds(**kwargs)


def test_curve_errors() -> None:
    effects = [est(0.0), est(1.0)]
    with pytest.raises(WorkbenchError, match="include 0"):
        find_overshoot([1.0, 2.0], effects, ppl_ratios=effects)
    with pytest.raises(WorkbenchError, match="sorted ascending"):
        find_overshoot([1.0, 0.0], effects, ppl_ratios=effects)
    with pytest.raises(WorkbenchError, match="entries for"):
        find_overshoot([0.0, 1.0, 2.0], effects, ppl_ratios=effects)
    with pytest.raises(WorkbenchError, match="damage measure"):
        find_overshoot([0.0, 1.0], effects)
    with pytest.raises(WorkbenchError, match="direction"):
        find_overshoot([0.0, 1.0], effects, ppl_ratios=effects, direction=0)
    with pytest.raises(WorkbenchError, match="no coefficients on side"):
        find_overshoot([0.0, 1.0], effects, ppl_ratios=effects, side=-1)


def test_docstring_examples() -> None:
    result = doctest.testmod(workbench.experiments.overshoot)
    assert result.attempted > 0 and result.failed == 0
