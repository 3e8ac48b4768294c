"""Applying vectors: plans (what, where, how much), hooks on the forward pass, generation.

:mod:`~workbench.steer.plan` describes a steering run; :mod:`~workbench.steer.apply` turns it into
hooks; :mod:`~workbench.steer.forward` scores steered logits; :mod:`~workbench.steer.generate`
writes steered text (transformers' ``generate`` with our hooks) under
:mod:`~workbench.steer.sampling`'s seeded sampling.
"""

from workbench.steer.apply import apply_plan
from workbench.steer.forward import steered_logits
from workbench.steer.generate import Generation, generate, generate_with_coefficients, side_by_side
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD, ACTADD_SAMPLING, Sampling

__all__ = [
    "ACTADD",
    "ACTADD_SAMPLING",
    "Generation",
    "PlanEntry",
    "Sampling",
    "SteeringPlan",
    "apply_plan",
    "generate",
    "generate_with_coefficients",
    "side_by_side",
    "steered_logits",
]
