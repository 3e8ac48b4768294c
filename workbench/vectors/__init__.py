"""Steering vectors: the :class:`SteeringVector` dataclass and the ways to build one.

Builders: ActAdd prompt pairs (:mod:`~workbench.vectors.prompts`), mean differences, linear
probes, random controls and layer rebuilds (:mod:`~workbench.vectors.build`), ITI heads
(:mod:`~workbench.vectors.iti`), dictionary components and SAE features
(:mod:`~workbench.vectors.dictionary`).
"""

from workbench.vectors.build import from_datasets, from_probe, random_like, rebuild
from workbench.vectors.dictionary import from_component, from_sae_feature
from workbench.vectors.iti import from_iti
from workbench.vectors.llamacpp import export_control_vector, import_control_vector
from workbench.vectors.peers import from_repeng, from_steering_vectors
from workbench.vectors.prompts import from_prompts
from workbench.vectors.vector import UNITS, SteeringVector

__all__ = [
    "UNITS",
    "SteeringVector",
    "export_control_vector",
    "from_component",
    "from_datasets",
    "from_iti",
    "from_probe",
    "from_prompts",
    "from_repeng",
    "from_steering_vectors",
    "import_control_vector",
    "from_sae_feature",
    "random_like",
    "rebuild",
]
