"""Why a coefficient breaks the model: the added norm, and attention paid to steered positions.

The LayerNorm account in the ActAdd comments: every block reads ``LN(x)``, so once the added
vector dwarfs the residual stream, the steered positions' stream is mostly the vector and the
blocks barely change it. Whether the rest of the text survives then depends on how much later
positions *attend* to those positions: a huge coefficient on positions nobody reads is harmless.
Two diagnostics per coefficient of a sweep:

* ``norm_ratio``: ``|coeff| x vector norm / mean residual norm`` at the layer (for prompt-aligned
  vectors, the largest row's norm), i.e. the coefficient in residual-norm units;
* ``attn_to_steered``: the attention mass later positions put on the steered positions, averaged
  over heads, query positions after the steered window, prompts, and every layer from the
  injection layer on. Position ``all`` steers every position, so it has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workbench.errors import check
from workbench.model.hooks import default_backend, eager_attention
from workbench.model.load import Model
from workbench.steer.apply import apply_plan, window_start
from workbench.steer.plan import PlanEntry, SteeringPlan


def norm_ratios(entry: PlanEntry, layer: int, residual_norm: float) -> list[float]:
    """``|raw coeff| x vector norm / residual norm`` for each coefficient of ``entry``."""
    check(residual_norm > 0, f"residual norm at layer {layer} is {residual_norm}; cannot scale")
    vnorm = entry.vector.norm(layer)
    return [abs(c) * vnorm / residual_norm for c in entry.raw_coeffs(layer)]


def _steered_keys(entry: PlanEntry, layer: int, lengths: torch.Tensor) -> torch.Tensor:
    """``(prompts, pos)`` bool: positions whose residual stream the entry changes at ``layer``."""
    t = entry.tensor_at(layer)
    rows = t if (t.dim() == 2 and entry.vector.site != "z") else t.reshape(1, -1)  # (n, feat)
    nonzero = rows.flatten(1).norm(dim=-1) > 0  # (n,)
    n = rows.shape[0]
    start = window_start(str(entry.position), lengths, n)  # (prompts,)
    width = int(lengths.max())
    pos = torch.arange(width)[None, :]  # (1, pos)
    j = pos - start[:, None]  # (prompts, pos) row of the vector at each position
    inside = (j >= 0) & (j < n) & (pos < lengths[:, None])  # (prompts, pos)
    return inside & nonzero[j.clamp(0, n - 1)]


def attention_to_steered(
    model: Model,
    entry: PlanEntry,
    layer: int,
    prompts: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[float | None]:
    """Mean attention mass on steered positions, per coefficient of ``entry`` (a list).

    Runs the model with the plan's hooks (through :mod:`workbench.model.hooks`) and reads the
    attention pattern of every block from ``layer`` on (transformers' eager attention, or
    ``hook_pattern`` on the TransformerLens path). ``None`` where no prompt has a query
    position after the steered window (or for position ``all``).
    """
    coeffs = entry.coeff if isinstance(entry.coeff, list) else [entry.coeff]
    if entry.position == "all":
        return [None] * len(coeffs)
    check(len(prompts) > 0, "no prompts for the attention diagnostic")
    ids, mask, _ = model.encode(list(prompts), padding_side="right")  # (prompts, pos)
    lengths = mask.sum(1)  # (prompts,)
    keys = _steered_keys(entry, layer, lengths)  # (prompts, pos)
    last = torch.where(keys, torch.arange(keys.shape[1])[None, :], -1).max(1).values  # (prompts,)
    queries = (torch.arange(keys.shape[1])[None, :] > last[:, None]) & mask.bool()  # (prompts, pos)
    queries &= (last >= 0)[:, None]
    blocks = range(layer, model.n_layers)
    backend = default_backend(model)
    n_p = len(prompts)
    rows = [(k, p) for k in range(len(coeffs)) for p in range(n_p)]
    mass = torch.full((len(rows),), float("nan"))  # (rows,)
    for a in range(0, len(rows), batch_size):
        chunk = rows[a : a + batch_size]
        sel = torch.tensor([p for _, p in chunk])
        plan = SteeringPlan([entry.with_coeff([float(coeffs[k]) for k, _ in chunk])])
        zeros = torch.zeros(len(chunk), dtype=torch.long)
        steer = apply_plan(
            model, plan, backend=backend, pad_offsets=zeros, prompt_lengths=lengths[sel]
        )
        with steer, torch.inference_mode():
            patterns = _patterns(model, backend, ids[sel], mask[sel], blocks)
        kq = keys[sel].to(torch.float32)  # (b, pos)
        q = queries[sel]  # (b, pos)
        per_layer = []
        for pattern in patterns:  # (b, heads, q, k) each
            on_keys = (pattern * kq[:, None, None, :]).sum(-1).mean(1)  # (b, q)
            per_layer.append(on_keys)
        avg = torch.stack(per_layer).mean(0)  # (b, q)
        counts = q.sum(1)  # (b,)
        vals = (avg * q).sum(1) / counts.clamp_min(1)  # (b,)
        mass[a : a + len(chunk)] = torch.where(counts > 0, vals, float("nan"))
    out: list[float | None] = []
    for k in range(len(coeffs)):
        m = mass[k * n_p : (k + 1) * n_p]
        m = m[~torch.isnan(m)]
        out.append(float(m.mean()) if len(m) else None)
    return out


def explain(
    coeffs: Sequence[float],
    diagnostics: dict[str, Any],
    breakdown: float | None,
) -> str:
    """One sentence on the breakdown coefficient in terms of the two diagnostics."""
    if breakdown is None:
        return "no breakdown within the sweep"
    i = list(coeffs).index(breakdown)
    zero = list(coeffs).index(0.0)
    ratio = diagnostics["norm_ratio"][i]
    text = f"at coefficient {breakdown:g} the added vector is {ratio:.2f}x the residual norm"
    attn = diagnostics.get("attn_to_steered") or []
    if i < len(attn) and attn[i] is not None and attn[zero] is not None:
        text += (
            f"; later positions give {100 * attn[i]:.1f}% of their attention to the steered "
            f"positions ({100 * attn[zero]:.1f}% unsteered)"
        )
    if ratio < 1:
        text += "; the vector is still smaller than the stream, so it breaks by direction, not size"
    return text


def _patterns(
    model: Model, backend: str, ids: torch.Tensor, mask: torch.Tensor, blocks: range
) -> list[torch.Tensor]:
    """Attention patterns ``(batch, heads, query, key)`` float32 of ``blocks``, in order."""
    if backend == "hf":
        assert model.hf is not None
        with eager_attention(model):
            out = model.hf(
                ids.to(model.device), attention_mask=mask.to(model.device), output_attentions=True
            )
        return [out.attentions[b].float().cpu() for b in blocks]
    names = {f"blocks.{b}.attn.hook_pattern" for b in blocks}
    _, cache = model.tl.run_with_cache(
        ids, attention_mask=mask, names_filter=lambda n: n in names, return_type=None
    )
    return [cache[f"blocks.{b}.attn.hook_pattern"].float() for b in blocks]
