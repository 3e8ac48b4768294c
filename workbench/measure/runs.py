"""Batched model runs for many conditions at once: sentence perplexity, next-token logits,
sampled completions.

Rows are ``condition x text``; entry ``i`` of the plan gets coefficient ``i`` of each row's
condition, so a whole coefficient sweep (and its controls) shares one scoring pass per text set
and one ``generate`` call. Injection conditions put their text in front of each text instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.errors import check
from workbench.measure.metrics import token_logprobs
from workbench.measure.spec import Condition
from workbench.model.load import Model
from workbench.steer.forward import iter_steered_logits
from workbench.steer.generate import generate_rows
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.vectors.prompts import space_token_id

# --------------------------------------------------------------------------- batched runs


def _plan(
    entries: Sequence[PlanEntry], conditions: Sequence[Condition], repeat: int
) -> SteeringPlan:
    """One plan for rows ``condition x repeat``: entry i gets coefficient i of each condition."""
    return SteeringPlan(
        [
            e.with_coeff([float(c.coeffs[i]) for c in conditions for _ in range(repeat)])
            for i, e in enumerate(entries)
        ]
    )


def front_pad(entries: Sequence[PlanEntry]) -> int:
    """Positions a front-aligned vector occupies after BOS (what scored sentences are shifted by)."""
    pad = 0
    for e in entries:
        if e.position == "front" and e.vector.aligned:
            for layer in e.layers or []:
                pad = max(pad, int(e.tensor_at(layer).shape[0]) - 1)
    return pad


def _ids(model: Model, text: str) -> list[int]:
    return [int(t) for t in model.tokenizer(text, add_special_tokens=False)["input_ids"]]


def _rows_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (rows, pos)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (rows, pos)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _prefixes(
    model: Model, entries: Sequence[PlanEntry], conditions: Sequence[Condition], pad: int
) -> list[list[int]]:
    bos = [] if model.bos_token_id is None else [int(model.bos_token_id)]
    space = [space_token_id(model)] * pad if pad else []
    return [bos + (_ids(model, c.inject) if c.inject is not None else space) for c in conditions]


def sentence_perplexities(
    model: Model,
    entries: Sequence[PlanEntry],
    conditions: Sequence[Condition],
    texts: Sequence[str],
    *,
    max_tokens: int = 64,
    batch_size: int = 32,
    backend: str | None = None,
) -> np.ndarray:
    """Per-sentence perplexity of ``texts`` under every condition: ``(n_conditions, n_texts)``.

    Each row is ``BOS + prefix + sentence`` where the prefix is the condition's injected prompt
    or, for steering conditions, the space tokens a front-aligned vector lands on; only the
    sentence's tokens are scored, so every condition scores exactly the same tokens.
    """
    check(len(texts) > 0, "no sentences to score; give at least one")
    body = [_ids(model, t)[:max_tokens] for t in texts]
    empty = [i for i, b in enumerate(body) if not b]
    check(not empty, f"sentences {empty} tokenize to nothing; remove them")
    prefixes = _prefixes(model, entries, conditions, front_pad(entries))
    rows = [p + b for p in prefixes for b in body]
    first = [max(len(p), 1) for p in prefixes for _ in body]  # first scored position per row
    ids, mask = _rows_batch(rows, model.pad_token_id)
    plan = _plan(entries, conditions, len(texts))
    out: list[np.ndarray] = []
    start = 0
    for batch in iter_steered_logits(
        model, (ids, mask), plan, backend=backend, batch_size=batch_size
    ):
        lp = token_logprobs(batch.logits, batch.ids, batch.mask).double()  # (b, pos - 1)
        target = torch.arange(1, lp.shape[1] + 1)[None, :]  # (1, pos - 1): position predicted
        firsts = torch.tensor(first[start : start + lp.shape[0]])[:, None]  # (b, 1)
        keep = (target >= firsts) & batch.mask[:, 1:].bool()  # (b, pos - 1)
        counts = keep.sum(1)  # (b,)
        check(bool((counts > 0).all()), "a sentence has no token to score; give longer text")
        nll = -(lp * keep).sum(1) / counts  # (b,)
        out.append(torch.exp(nll).numpy())
        start += lp.shape[0]
    return np.concatenate(out).reshape(len(conditions), len(texts))


def last_token_logits(
    model: Model,
    entries: Sequence[PlanEntry],
    conditions: Sequence[Condition],
    prompts: Sequence[str],
    *,
    batch_size: int = 32,
    backend: str | None = None,
) -> torch.Tensor:
    """Next-token logits after each prompt under every condition: ``(n_conditions, n_prompts,
    vocab)`` float32. Injection conditions put their text between BOS and the prompt."""
    check(len(prompts) > 0, "no prompts to score; give at least one")
    body = [_ids(model, p) for p in prompts]
    prefixes = _prefixes(model, entries, conditions, 0)
    rows = [p + b for p in prefixes for b in body]
    ids, mask = _rows_batch(rows, model.pad_token_id)
    plan = _plan(entries, conditions, len(prompts))
    out: list[torch.Tensor] = []
    for batch in iter_steered_logits(
        model, (ids, mask), plan, backend=backend, batch_size=batch_size, last_only=True
    ):
        out.append(batch.logits[:, 0])  # (b, vocab)
    return torch.cat(out).view(len(conditions), len(prompts), -1)


def completions(
    model: Model,
    entries: Sequence[PlanEntry],
    conditions: Sequence[Condition],
    prompts: Sequence[str],
    n: int,
    settings: Sampling,
    *,
    batch_size: int = 64,
    backend: str | None = None,
) -> tuple[list[list[str]], list[str]]:
    """``n`` completions of each prompt per condition, one ``generate`` batch for all of them.

    Returns ``(texts per condition (prompt-major, n per prompt), notes)``. Sample ``k`` shares
    its sampling noise across conditions. Injection conditions continue ``inject + " " + prompt``.
    """
    check(n >= 1, f"n must be at least 1, got {n}")
    texts = list(prompts)
    prompt_of_row: list[int] = []
    for c in conditions:
        offset = 0
        if c.inject is not None:
            offset = len(texts)
            sep = "" if c.inject.endswith((" ", "\n")) else " "
            texts += [c.inject + sep + p.lstrip() for p in prompts]
        prompt_of_row += [offset + p for p in range(len(prompts)) for _ in range(n)]
    sample_of_row = [k for _ in conditions for _ in prompts for k in range(n)]
    plan = _plan(entries, conditions, len(prompts) * n)
    gen = generate_rows(
        model,
        texts,
        prompt_of_row,
        sample_of_row,
        plan,
        settings,
        backend=backend,
        batch_size=batch_size,
    )
    per = len(prompts) * n
    return [gen.texts[i * per : (i + 1) * per] for i in range(len(conditions))], gen.notes
