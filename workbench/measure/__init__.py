"""What steering did: effects, side effects, controls and their uncertainty.

:mod:`~workbench.measure.spec` says what to measure; :mod:`~workbench.measure.effects` measures a
vector against its controls; :mod:`~workbench.measure.metrics` (logit-level),
:mod:`~workbench.measure.text_metrics` (text-level) and :mod:`~workbench.measure.stats`
(bootstrap intervals) are the pieces; :mod:`~workbench.measure.token_effects` colours a passage by
per-token log-prob change.
"""

from workbench.measure.effects import measure, measure_vector
from workbench.measure.spec import EffectSpec, MeasureSpec
from workbench.measure.stats import Estimate
from workbench.measure.token_effects import TokenEffects, token_logprob_changes

__all__ = [
    "EffectSpec",
    "Estimate",
    "MeasureSpec",
    "TokenEffects",
    "measure",
    "measure_vector",
    "token_logprob_changes",
]
