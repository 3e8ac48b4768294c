"""Steered (and unsteered) forward passes that return logits, for scoring.

Metrics such as perplexity and next-token KL need the logits of the same texts with and without
a plan. :func:`steered_logits` runs texts (right-padded, BOS prepended) through the model under a
plan and returns ``(logits, ids, mask)``; :func:`iter_steered_logits` yields the same batch by
batch for large text sets; :func:`coefficient_batch` scores several coefficients in one batch
(row ``i`` gets coefficient ``i``), which is what coefficient sweeps use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

from workbench.errors import WorkbenchError, check
from workbench.model.hooks import default_backend
from workbench.model.load import Model
from workbench.steer import safety
from workbench.steer.apply import apply_plan
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.vector import SteeringVector

Inputs = Sequence[str] | tuple[torch.Tensor, torch.Tensor] | torch.Tensor


class ForwardOutput(NamedTuple):
    """Logits of a batch with the ids and mask they were computed from."""

    logits: torch.Tensor  # (batch, pos, vocab), float32
    ids: torch.Tensor  # (batch, pos)
    mask: torch.Tensor  # (batch, pos), 1 for real tokens


def encode_inputs(
    model: Model, inputs: Inputs, max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts (right-padded, BOS prepended), ``(ids, mask)`` or bare ids -> ``(ids, mask)``."""
    if isinstance(inputs, torch.Tensor):
        ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)  # (batch, pos)
        return ids, torch.ones_like(ids)
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], torch.Tensor):
        ids, mask = inputs
        check(
            ids.shape == mask.shape, f"ids {tuple(ids.shape)} and mask {tuple(mask.shape)} differ"
        )
        return ids, mask
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    check(len(texts) > 0, "no texts to score; give at least one")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise WorkbenchError("a text to score is empty; remove it or give some text")
    ids, mask, _ = model.encode(texts, padding_side="right", max_tokens=max_tokens)
    return ids, mask


def _run(
    model: Model, backend: str, ids: torch.Tensor, mask: torch.Tensor, last_only: bool = False
) -> torch.Tensor:
    """``(batch, pos, vocab)`` logits, or ``(batch, 1, vocab)`` at each row's last real token
    when ``last_only`` (the unembedding then runs on one position a row: on a 262k vocabulary
    that is most of the cost and memory of a short forward)."""
    ids, mask = ids.to(model.device), mask.to(model.device)
    last = mask.sum(1) - 1  # (batch,) right padding: the last real token
    rows = torch.arange(ids.shape[0], device=ids.device)
    with torch.inference_mode():
        if backend == "tl":
            logits = model.tl(ids, attention_mask=mask)
            if last_only:
                logits = logits[rows, last][:, None]  # (batch, 1, vocab)
        else:
            if model.hf is None:
                raise WorkbenchError(
                    f"model {model.name} has no transformers twin: use backend 'tl'"
                )
            keep = last[:, None] if last_only else 0  # (batch, 1) positions per row
            logits = model.hf(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            if last_only and logits.shape[1] != 1:  # a model class without logits_to_keep
                logits = logits[rows, last][:, None]
    real = logits if last_only else logits[mask.bool().to(logits.device)]  # padding never scored
    safety.check_finite(
        real,
        "the logits",
        "the steered model broke down; lower the coefficient (or load it in float32)",
    )
    return logits.float().cpu()  # (batch, pos or 1, vocab), on the CPU whatever the device


def iter_steered_logits(
    model: Model,
    inputs: Inputs,
    plan: SteeringPlan | None = None,
    *,
    backend: str | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    last_only: bool = False,
) -> Iterator[ForwardOutput]:
    """Yield :class:`ForwardOutput` batch by batch (``plan=None``: unsteered).

    Each text is its own "prompt" for the plan's position policy (front/middle/back windows are
    placed within it). A plan with coefficient lists needs one coefficient per text.
    ``last_only``: logits ``(batch, 1, vocab)`` at each text's last token only (next-token
    measures), the same values as the full logits there.
    """
    check(batch_size >= 1, f"batch size must be at least 1, got {batch_size}")
    backend = backend or default_backend(model)
    ids, mask = encode_inputs(model, inputs, max_tokens)
    if plan is not None and plan.rows is not None and plan.rows != ids.shape[0]:
        raise WorkbenchError(
            f"the plan has {plan.rows} coefficients per entry but there are {ids.shape[0]} "
            "texts; give one coefficient per text"
        )
    lengths = mask.sum(1)  # (batch,) right padding: real tokens come first
    for a in range(0, ids.shape[0], batch_size):
        b = min(a + batch_size, ids.shape[0])
        width = int(lengths[a:b].max())  # trim padding that only other batches need
        bids, bmask = ids[a:b, :width], mask[a:b, :width]
        if plan is None:
            logits = _run(model, backend, bids, bmask, last_only)
        else:
            # Hooks live only while this batch runs: a caller that stops iterating early must
            # not leave them on the model.
            sub = plan if plan.rows is None else plan.select_rows(range(a, b))
            zeros = torch.zeros(b - a, dtype=torch.long)
            with apply_plan(
                model, sub, backend=backend, pad_offsets=zeros, prompt_lengths=lengths[a:b]
            ):
                logits = _run(model, backend, bids, bmask, last_only)
        yield ForwardOutput(logits, bids, bmask)


def steered_logits(
    model: Model,
    inputs: Inputs,
    plan: SteeringPlan | None = None,
    *,
    backend: str | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    last_only: bool = False,
) -> ForwardOutput:
    """Logits of ``inputs`` under ``plan`` (``None``: unsteered), all batches concatenated.

    Returns ``(logits (n, pos, vocab), ids (n, pos), mask (n, pos))``, right-padded to the
    longest text; with ``last_only`` the logits are ``(n, 1, vocab)``, at each text's last token. For thousands of texts use :func:`iter_steered_logits` instead: the full
    logits tensor is ``n x pos x vocab`` floats.

    Example:
        >>> logits, ids, mask = steered_logits(model, ["I went up to my friend"], plan)  # doctest: +SKIP
    """
    parts = list(
        iter_steered_logits(
            model,
            inputs,
            plan,
            backend=backend,
            batch_size=batch_size,
            max_tokens=max_tokens,
            last_only=last_only,
        )
    )
    width = max(p.ids.shape[1] for p in parts)
    logit_width = 1 if last_only else width
    logits = torch.cat([_pad(p.logits, logit_width, 0.0) for p in parts])  # (n, pos or 1, V)
    ids = torch.cat([_pad(p.ids, width, model.pad_token_id) for p in parts])  # (n, pos)
    mask = torch.cat([_pad(p.mask, width, 0) for p in parts])  # (n, pos)
    return ForwardOutput(logits, ids, mask)


def _pad(t: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    shape = (t.shape[0], width - t.shape[1], *t.shape[2:])
    return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=1)


def coefficient_batch(
    model: Model,
    entry: PlanEntry | SteeringVector,
    inputs: Sequence[str],
    coeffs: Sequence[float],
    *,
    backend: str | None = None,
    batch_size: int = 64,
    max_tokens: int | None = None,
) -> ForwardOutput:
    """Logits of every text under every coefficient, batched (row = coefficient x text).

    ``entry`` is a :class:`PlanEntry` (its layers, position and units are kept, its coefficient
    replaced) or a bare vector (defaults). Returns logits of shape
    ``(len(coeffs), len(inputs), pos, vocab)`` with ids and mask ``(len(inputs), pos)``; equal,
    within float error, to running each coefficient separately.
    """
    check(len(coeffs) > 0, "no coefficients given; give at least one")
    texts = list(inputs)
    check(len(texts) > 0, "no texts to score; give at least one")
    base = entry if isinstance(entry, PlanEntry) else PlanEntry(entry, 0.0)
    plan = SteeringPlan([base.with_coeff([float(c) for c in coeffs for _ in texts])])
    out = steered_logits(
        model,
        texts * len(coeffs),
        plan,
        backend=backend,
        batch_size=batch_size,
        max_tokens=max_tokens,
    )
    n = len(texts)
    logits = out.logits.view(len(coeffs), n, *out.logits.shape[1:])  # (coeffs, texts, pos, vocab)
    return ForwardOutput(logits, out.ids[:n], out.mask[:n])
