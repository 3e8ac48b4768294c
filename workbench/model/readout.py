"""The model's read-out end: its final norm and its unembedding, on whichever path it has.

Analysis code (the logit lens of a direction, per-token effects) needs ``ln_final`` and
``W_U``; both are taken from the transformers model, so no TransformerLens copy is built for
them, and from the TransformerLens model for models that only have that.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.model.load import Model

# Where transformers keeps the final norm, by architecture family.
_FINAL_NORMS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.decoder.final_layer_norm",
)


def final_norm(model: Model) -> Any | None:
    """The final norm module (``x (..., d_model) -> (..., d_model)``), or None if there is none."""
    if model.hf is None:
        return getattr(model.tl, "ln_final", None)
    for path in _FINAL_NORMS:
        obj: Any = model.hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise WorkbenchError(
        f"cannot find the final norm of {type(model.hf).__name__}; use backend 'tl'"
    )


def norm_bias(norm: Any) -> torch.Tensor | None:
    """The additive bias of a LayerNorm (None for RMSNorm)."""
    b = getattr(norm, "bias", None)
    if b is None:
        b = getattr(norm, "b", None)  # TransformerLens's LayerNorm
    return b if isinstance(b, torch.Tensor) else None


def unembedding(model: Model) -> torch.Tensor:
    """``W_U``, ``(d_model, vocab)``: final residual (after the final norm) to logits."""
    if model.hf is None:
        return model.tl.W_U  # type: ignore[no-any-return]
    head = model.hf.get_output_embeddings()
    if head is None:
        raise WorkbenchError(f"{type(model.hf).__name__} has no output embedding; use backend 'tl'")
    return head.weight.T  # type: ignore[no-any-return]
