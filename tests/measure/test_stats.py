"""Tests for workbench.measure.stats: bootstrap intervals and the difference tests built on them."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import workbench.measure.stats
from workbench.errors import WorkbenchError
from workbench.measure.stats import (
    Estimate,
    bootstrap_ci,
    bootstrap_diff_ci,
    differs,
    estimate,
    estimate_diff,
    paired_differs,
)


def test_interval_contains_mean_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(3.0, 1.0, size=20)
    large = rng.normal(3.0, 1.0, size=2000)
    value_s, low_s, high_s = bootstrap_ci(small)
    value_l, low_l, high_l = bootstrap_ci(large)
    assert value_s == pytest.approx(small.mean())
    assert low_s <= value_s <= high_s
    assert low_l <= value_l <= high_l
    assert low_l < 3.0 < high_l
    assert (high_l - low_l) < (high_s - low_s) / 5  # width shrinks ~ 1/sqrt(n): 10x here


def test_interval_width_matches_normal_theory() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 2.0, size=400)
    _, low, high = bootstrap_ci(values, n_boot=2000)
    expected_half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(expected_half, rel=0.15)


def test_seed_makes_it_reproducible_and_alpha_widens() -> None:
    values = np.arange(30.0)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    _, low95, high95 = bootstrap_ci(values, alpha=0.05)
    _, low50, high50 = bootstrap_ci(values, alpha=0.5)
    assert low95 < low50 and high50 < high95


def test_single_value_collapses_and_empty_raises() -> None:
    assert bootstrap_ci([4.0]) == (4.0, 4.0, 4.0)
    assert estimate([4.0]) == Estimate(4.0, 4.0, 4.0, 1)
    with pytest.raises(WorkbenchError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(WorkbenchError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(WorkbenchError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_custom_statistic_without_axis_argument() -> None:
    values = [1.0, 2.0, 3.0, 100.0]
    value, low, high = bootstrap_ci(values, statistic=lambda x: float(np.median(x)), n_boot=200)
    assert value == 2.5
    assert low <= value <= high
    assert bootstrap_ci(values, statistic=np.median, n_boot=200)[0] == 2.5


def test_paired_difference_removes_prompt_variation() -> None:
    rng = np.random.default_rng(3)
    per_prompt = rng.normal(0.0, 10.0, size=50)  # large prompt-to-prompt spread
    unsteered = per_prompt + rng.normal(0.0, 0.1, size=50)
    steered = per_prompt + 1.0 + rng.normal(0.0, 0.1, size=50)
    value, low, high = bootstrap_diff_ci(steered, unsteered)
    assert low < 1.0 < high and value == pytest.approx(1.0, abs=0.1)
    assert paired_differs(steered, unsteered)
    # Unpaired intervals overlap because of the prompt spread, so differs() cannot see it.
    assert not differs(estimate(steered), estimate(unsteered))
    assert estimate_diff(steered, unsteered).n == 50
    with pytest.raises(WorkbenchError, match="length"):
        bootstrap_diff_ci([1.0, 2.0], [1.0])


def test_differs_uses_interval_overlap() -> None:
    base = Estimate(0.0, -1.0, 1.0, 10)
    assert differs(Estimate(3.0, 2.0, 4.0, 10), base)
    assert not differs(Estimate(1.5, 0.9, 2.1, 10), base)
    assert differs(Estimate(0.1, 0.1, 0.1, 1), Estimate(0.0, 0.0, 0.0, 1))


def test_estimate_json_round_trip_and_validation() -> None:
    est = estimate([1.0, 2.0, 4.0])
    assert Estimate.from_json(est.to_json()) == est
    assert est.half_width == pytest.approx((est.high - est.low) / 2)
    with pytest.raises(WorkbenchError, match="does not contain"):
        Estimate(5.0, 0.0, 1.0, 3)
    with pytest.raises(WorkbenchError, match="lacks keys"):
        Estimate.from_json({"value": 1.0})


def test_docstring_examples() -> None:
    result = doctest.testmod(workbench.measure.stats)
    assert result.attempted > 0 and result.failed == 0
