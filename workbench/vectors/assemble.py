"""The one place a builder turns directions found on a model into a :class:`SteeringVector`.

Every builder (prompt pairs, mean difference, probe, ITI, dictionary component, SAE feature)
records the model's name and width and the model's mean residual norm at each of the vector's
layers, so that coefficients can later be given in residual-norm units. This lives apart from
:mod:`workbench.vectors.vector` so that the dataclass itself does not pull in the model stack.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.activations.collect import mean_residual_norms
from workbench.model.load import Model
from workbench.vectors.vector import SteeringVector


def assemble(
    model: Model,
    directions: dict[int, torch.Tensor],
    *,
    site: str,
    method: str,
    recipe: dict[str, Any],
    info: dict[str, Any],
) -> SteeringVector:
    """A vector of ``directions`` made on ``model`` at ``site``, with the model's layer norms.

    ``layer_norms`` are measured at the vector's layers, in ascending order, at ``site`` (for
    site ``z``, over all heads together); see
    :func:`~workbench.activations.collect.mean_residual_norms`.

    Example:
        >>> v = assemble(model, {6: d}, site="resid_pre", method="mean_diff", recipe={}, info={})  # doctest: +SKIP
    """
    return SteeringVector(
        directions=directions,
        model=model.name,
        d_model=model.d_model,
        site=site,
        method=method,
        recipe=recipe,
        layer_norms=mean_residual_norms(model, sorted(directions), site),
        info=info,
    )
