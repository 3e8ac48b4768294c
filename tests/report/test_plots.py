"""Small helpers of the plots: reader-facing metric names, missing overshoot marks, colour range."""

from __future__ import annotations

import numpy as np

from workbench.report.plots import metric_title, missing_marks, robust_range


def test_internal_metric_keys_become_words() -> None:
    assert metric_title("target_logprob_shift:v2") == (
        "shift in next-token log-prob of target words (nats) (v2)"
    )
    assert metric_title("off_target_ratio").startswith("off-target perplexity ratio")
    assert metric_title("some_new_key") == "some new key"


def test_missing_marks_say_why() -> None:
    got = missing_marks({"onset": None, "best": None, "breakdown": 4.0})
    assert set(got) == {"onset", "best"} and "unsteered interval" in got["onset"]
    assert missing_marks({"onset": 1.0, "best": 2.0, "breakdown": 4.0}) == {}


def test_one_outlier_does_not_saturate_the_colour_range() -> None:
    values = np.r_[np.linspace(0.0, 1.0, 200), 1000.0, np.nan]
    lo, hi = robust_range(values) or (0.0, 0.0)
    assert 0.0 <= lo < 0.05 and 0.95 < hi < 2.0
    assert robust_range([3.0, 3.0]) is None and robust_range([]) is None
