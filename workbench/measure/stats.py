"""Bootstrap confidence intervals for steering measurements.

Every number the workbench reports about a steered model (wedding words per completion, a
perplexity ratio, a sentiment score) is an average over a handful of prompts or samples, so it
comes with a percentile-bootstrap interval. :class:`Estimate` carries the value, the interval and
the sample count together so the interval is never lost on the way to a report.

>>> est = estimate([1.0, 2.0, 3.0, 4.0])
>>> est.value, est.n
(2.5, 4)
>>> est.low <= 2.5 <= est.high
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import check

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "bootstrap_ratio",
    "differs",
    "estimate",
    "estimate_diff",
    "paired_differs",
]

Statistic = Callable[..., Any]


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval ``[low, high]`` and the sample count ``n``.

    With ``n == 1`` the interval collapses to ``low == value == high``: one sample says nothing
    about spread, so comparisons that use the interval (:func:`differs`) become plain
    comparisons of values.

    >>> Estimate(value=0.5, low=0.25, high=0.75, n=20).to_json()
    {'value': 0.5, 'low': 0.25, 'high': 0.75, 'n': 20}
    """

    value: float
    low: float
    high: float
    n: int

    def __post_init__(self) -> None:
        check(self.n >= 1, f"Estimate needs n >= 1 samples, got n={self.n}")
        check(
            self.low <= self.value <= self.high,
            f"Estimate interval [{self.low}, {self.high}] does not contain its value "
            f"{self.value}; build it with estimate() or bootstrap_ci()",
        )

    def to_json(self) -> dict[str, float | int]:
        """Plain dict for JSON reports."""
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        """Inverse of :meth:`to_json`."""
        missing = {"value", "low", "high", "n"} - set(data)
        check(not missing, f"Estimate JSON lacks keys {sorted(missing)}; expected value/low/high/n")
        return cls(float(data["value"]), float(data["low"]), float(data["high"]), int(data["n"]))

    @property
    def half_width(self) -> float:
        """Half the interval's width, a quick error bar."""
        return (self.high - self.low) / 2


def _as_samples(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    check(arr.size > 0, f"{name} is empty; a confidence interval needs at least one sample")
    check(
        bool(np.all(np.isfinite(arr))),
        f"{name} contains NaN or inf; drop failed samples before computing an interval",
    )
    return arr


def _check_options(n_boot: int, alpha: float) -> None:
    check(n_boot >= 1, f"n_boot must be >= 1, got {n_boot}")
    check(0.0 < alpha < 1.0, f"alpha must be in (0, 1), got {alpha}; 0.05 gives a 95% interval")


def _resampled(samples: np.ndarray, statistic: Statistic, n_boot: int, seed: int) -> np.ndarray:
    """The statistic on ``n_boot`` resamples (with replacement) of ``samples``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, samples.size, size=(n_boot, samples.size))  # (n_boot, n)
    draws = samples[idx]  # (n_boot, n)
    try:
        # numpy reductions take axis= and run vectorised; anything else falls back to a loop.
        stats = np.asarray(statistic(draws, axis=1), dtype=np.float64)  # (n_boot,)
        if stats.shape == (n_boot,):
            return stats
    except TypeError:
        pass
    return np.array([float(statistic(row)) for row in draws])  # (n_boot,)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Statistic = np.mean,
) -> tuple[float, float, float]:
    """Percentile-bootstrap interval: ``(estimate, low, high)`` of ``statistic`` over ``values``.

    ``estimate`` is the statistic on the full sample; ``low``/``high`` are the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the statistic over ``n_boot`` resamples, widened if needed so they
    always contain the estimate. With one value the interval collapses to that value. A fixed
    ``seed`` makes reports reproducible. ``statistic`` may be any callable taking a 1-D array;
    numpy reductions that accept ``axis=`` (``np.mean``, ``np.median``) run vectorised.

    >>> bootstrap_ci([2.0])
    (2.0, 2.0, 2.0)
    >>> value, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> value, low < value < high
    (3.0, True)
    """
    samples = _as_samples(values)
    _check_options(n_boot, alpha)
    value = float(statistic(samples))
    if samples.size == 1:
        return value, value, value
    stats = _resampled(samples, statistic, n_boot, seed)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    # Skewed statistics can put the full-sample value just outside the percentile interval.
    return value, min(float(low), value), max(float(high), value)


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Statistic = np.mean,
) -> tuple[float, float, float]:
    """Paired bootstrap of ``a - b``: ``(estimate, low, high)``.

    ``a[i]`` and ``b[i]`` must come from the same prompt and seed (steered and unsteered), so
    the pairs are resampled together; that removes prompt-to-prompt variation and gives a much
    tighter interval than comparing two independent intervals.

    >>> bootstrap_diff_ci([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    (2.0, 2.0, 2.0)
    """
    a_arr, b_arr = _as_samples(a, "a"), _as_samples(b, "b")
    check(
        a_arr.shape == b_arr.shape,
        f"paired samples differ in length ({a_arr.size} vs {b_arr.size}); pass one steered and "
        "one unsteered value per prompt/seed",
    )
    return bootstrap_ci(a_arr - b_arr, n_boot=n_boot, alpha=alpha, seed=seed, statistic=statistic)


def estimate(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Statistic = np.mean,
) -> Estimate:
    """:func:`bootstrap_ci` packed into an :class:`Estimate`.

    >>> estimate([1.0, 1.0, 1.0])
    Estimate(value=1.0, low=1.0, high=1.0, n=3)
    """
    samples = _as_samples(values)
    value, low, high = bootstrap_ci(
        samples, n_boot=n_boot, alpha=alpha, seed=seed, statistic=statistic
    )
    return Estimate(value, low, high, samples.size)


def estimate_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Statistic = np.mean,
) -> Estimate:
    """:func:`bootstrap_diff_ci` (paired ``a - b``) packed into an :class:`Estimate`.

    >>> estimate_diff([2.0, 3.0], [1.0, 2.0]).value
    1.0
    """
    value, low, high = bootstrap_diff_ci(
        a, b, n_boot=n_boot, alpha=alpha, seed=seed, statistic=statistic
    )
    return Estimate(value, low, high, int(np.asarray(a).size))


def differs(a: Estimate, b: Estimate) -> bool:
    """Whether two estimates' intervals do not overlap.

    This is the overshoot finder's test of "the effect differs from unsteered beyond the
    interval". Non-overlap of two 95% intervals is conservative (a stricter test than p < 0.05);
    when the samples are paired, prefer :func:`paired_differs`. Estimates with ``n == 1`` have
    zero-width intervals, so any difference in value counts.

    >>> differs(Estimate(1.0, 0.5, 1.5, 10), Estimate(3.0, 2.0, 4.0, 10))
    True
    >>> differs(Estimate(1.0, 0.5, 1.5, 10), Estimate(1.8, 1.4, 2.2, 10))
    False
    """
    return a.high < b.low or b.high < a.low


def paired_differs(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> bool:
    """Whether the paired bootstrap interval of ``mean(a - b)`` excludes zero.

    >>> paired_differs([1.1, 2.1, 3.1, 4.1], [1.0, 2.0, 3.0, 4.0])
    True
    """
    _, low, high = bootstrap_diff_ci(a, b, n_boot=n_boot, alpha=alpha, seed=seed)
    return low > 0.0 or high < 0.0


def bootstrap_ratio(
    num: Sequence[float] | np.ndarray,
    den: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    min_den: float = 1e-6,
) -> Estimate | None:
    """``mean(num) / mean(den)`` with a paired percentile-bootstrap interval, or None when
    ``|mean(den)| < min_den`` (no meaningful ratio).

    ``num[i]`` and ``den[i]`` come from the same sample (prompt), so pairs are resampled
    together (what composition's retention, ``combined / alone``, needs). Resamples whose
    denominator is below ``min_den`` are dropped.

    >>> bootstrap_ratio([1.0, 1.0], [2.0, 2.0]).value
    0.5
    """
    a, b = _as_samples(num, "num"), _as_samples(den, "den")
    check(a.shape == b.shape, f"paired samples differ in length ({a.size} vs {b.size})")
    _check_options(n_boot, alpha)
    if abs(b.mean()) < min_den:
        return None
    value = float(a.mean() / b.mean())
    if a.size == 1:
        return Estimate(value, value, value, 1)
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))  # (n_boot, n)
    d = b[idx].mean(1)  # (n_boot,)
    ok = np.abs(d) >= min_den
    ratios = a[idx].mean(1)[ok] / d[ok]
    if ratios.size == 0:
        return Estimate(value, value, value, int(a.size))
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, min(float(low), value), max(float(high), value), int(a.size))
