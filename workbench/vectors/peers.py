"""Vectors made by the peer libraries, from their in-memory objects (never pickle).

* repeng's ``ControlVector`` (``.model_type``, ``.directions: {layer: ndarray (d_model,)}``)
* steering-vectors' ``SteeringVector`` (``.layer_activations: {layer: Tensor (d_model,)}``,
  ``.layer_type``)

Both count layers as the **output of block L** (``model.model.layers[L]``'s output): our
``resid_post L``, which is our ``resid_pre L+1``. Imports keep that exact place (site
``resid_post``, same L), so the last block's output stays expressible. steering-vectors'
``self_attn`` and ``mlp`` layer types are the branch outputs, our ``attn_out`` and ``mlp_out``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.errors import check
from workbench.model.load import Model
from workbench.vectors.assemble import assemble
from workbench.vectors.vector import SteeringVector

# steering-vectors' layer_type -> our site at the same block index.
SV_SITES = {"decoder_block": "resid_post", "self_attn": "attn_out", "mlp": "mlp_out"}


def _directions(raw: Any, model: Model, what: str) -> dict[int, torch.Tensor]:
    """``{layer: (d_model,) float32}`` checked against ``model``'s width and layers."""
    check(isinstance(raw, dict) and bool(raw), f"the {what} has no layers")
    out: dict[int, torch.Tensor] = {}
    for key, value in raw.items():
        check(
            isinstance(key, (int, np.integer)) and not isinstance(key, bool),
            f"the {what} has a layer key {key!r}; expected whole numbers",
        )
        layer = int(key)
        check(
            0 <= layer < model.n_layers,
            f"the {what} has layer {layer}, which {model.name} lacks (0..{model.n_layers - 1}); "
            "was it made for another model?",
        )
        t = torch.as_tensor(np.asarray(value.detach().cpu() if torch.is_tensor(value) else value))
        t = t.to(torch.float32).reshape(-1)  # (d_model,)
        check(
            t.numel() == model.d_model,
            f"the {what} has width {t.numel()} at layer {layer}, but {model.name} has d_model "
            f"{model.d_model}: it was made for another model",
        )
        check(bool(torch.isfinite(t).all()), f"the {what} at layer {layer} is not finite")
        out[layer] = t
    return dict(sorted(out.items()))


def from_repeng(control_vector: Any, model: Model) -> SteeringVector:
    """repeng's ``ControlVector`` as a ``resid_post`` vector (repeng's layer L = block L's
    output = our resid_post L)."""
    directions = _directions(getattr(control_vector, "directions", None), model, "repeng vector")
    model_type = str(getattr(control_vector, "model_type", ""))
    hf_type = str(getattr(getattr(model.hf, "config", None), "model_type", ""))
    check(
        not model_type or not hf_type or model_type == hf_type,
        f"the repeng vector is for a {model_type!r} model, but {model.name} is {hf_type!r}",
    )
    return assemble(
        model,
        directions,
        site="resid_post",
        method="repeng",
        recipe={"from": "repeng", "repeng_layers": sorted(directions), "model_type": model_type},
        info={"imported_from": "repeng ControlVector (layer L = output of block L)"},
    )


def from_steering_vectors(steering_vector: Any, model: Model) -> SteeringVector:
    """steering-vectors' ``SteeringVector`` at the same block index (``decoder_block`` ->
    ``resid_post``, ``self_attn`` -> ``attn_out``, ``mlp`` -> ``mlp_out``)."""
    layer_type = str(getattr(steering_vector, "layer_type", "decoder_block"))
    check(
        layer_type in SV_SITES,
        f"steering-vectors layer_type {layer_type!r} has no counterpart here; use one of "
        f"{', '.join(SV_SITES)}",
    )
    directions = _directions(
        getattr(steering_vector, "layer_activations", None), model, "steering-vectors vector"
    )
    return assemble(
        model,
        directions,
        site=SV_SITES[layer_type],
        method="steering_vectors",
        recipe={"from": "steering-vectors", "layer_type": layer_type, "layers": sorted(directions)},
        info={
            "imported_from": f"steering-vectors SteeringVector ({layer_type}, layer L = block L)"
        },
    )
