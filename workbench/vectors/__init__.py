"""Steering vectors: the :class:`SteeringVector` dataclass and the ways to build one.

Builders: ActAdd prompt pairs (:mod:`~workbench.vectors.prompts`), mean differences, linear
probes, random controls and layer rebuilds (:mod:`~workbench.vectors.build`), ITI heads
(:mod:`~workbench.vectors.iti`), dictionary components and SAE features
(:mod:`~workbench.vectors.dictionary`).
"""

from workbench.vectors.build import from_datasets, from_probe, random_like, rebuild
from workbench.vectors.dictionary import from_component, from_sae_feature
from workbench.vectors.iti import from_iti
from workbench.vectors.prompts import from_prompts
from workbench.vectors.vector import UNITS, SteeringVector

__all__ = [
    "UNITS",
    "SteeringVector",
    "from_component",
    "from_datasets",
    "from_iti",
    "from_probe",
    "from_prompts",
    "from_sae_feature",
    "random_like",
    "rebuild",
]
