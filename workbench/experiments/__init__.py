"""Experiments over many steered runs: layer x coefficient sweeps with overshoot, composition.

:mod:`~workbench.experiments.sweep` (files in :mod:`~workbench.experiments.sweep_files`,
diagnostics in :mod:`~workbench.experiments.diagnostics`, onset/best/breakdown in
:mod:`~workbench.experiments.overshoot`); :mod:`~workbench.experiments.compose` (the arithmetic
in :mod:`~workbench.experiments.composition_math`).
"""

from workbench.experiments.compose import ComposeItem, run_compose
from workbench.experiments.overshoot import Overshoot, OvershootThresholds, find_overshoot
from workbench.experiments.sweep import SweepConfig, run_sweep

__all__ = [
    "ComposeItem",
    "Overshoot",
    "OvershootThresholds",
    "SweepConfig",
    "find_overshoot",
    "run_compose",
    "run_sweep",
]
