"""retention_warnings: which retention ratios the compose page and report flag as unreliable."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.experiments.composition_math import retention_warnings


def test_noise_in_the_denominator_is_flagged() -> None:
    got = retention_warnings(
        [(0.5, 1.0), (-0.02, 0.03), (0.2, 0.4), (0.1, 0.2)],
        [(0.8, 1.1), (-9.0, 4.0), None, (-1.5, 3.0)],
    )
    assert got[0] is None
    assert got[1] is not None and "includes 0" in got[1]
    assert got[2] is not None and "about 0" in got[2]
    assert got[3] is not None and "too wide" in got[3]


def test_lengths_must_match() -> None:
    with pytest.raises(WorkbenchError, match="2 alone intervals for 1"):
        retention_warnings([(0.1, 0.2), (0.1, 0.2)], [None])
