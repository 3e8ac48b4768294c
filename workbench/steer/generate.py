"""Steered generation: plain, side by side with unsteered, and over many coefficients at once.

The fast path is transformers' own ``generate`` on ``model.hf`` with the plan's hooks on its
decoder layers and the KV cache on; ``backend="tl"`` runs a cached loop on the TransformerLens
model for models without a transformers twin. Prompts are left-padded and every row's pad
offset is handed to the plan, so position windows land on real tokens.

Rows are (prompt, sample) pairs; a row's sampling noise depends only on the seed and its sample
index (see :mod:`workbench.steer.sampling`), so steered and unsteered rows, or rows under different
coefficients, share it, whether they run in one batch or in several.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.errors import WorkbenchError, check
from workbench.model.hooks import default_backend
from workbench.model.load import Model
from workbench.steer import safety
from workbench.steer.apply import apply_plan
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD_SAMPLING, Sampling, processors, row_seed
from workbench.vectors.vector import SteeringVector


@dataclass
class Generation:
    """Completions of a batch of rows (prompt excluded), with their tokens.

    Attributes:
        texts: one completion per row, cut at the first EOS.
        tokens: ``(rows, prompt_width + new)`` left-padded prompt ids followed by new ids.
        prompt_of_row / sample_of_row: which prompt and which sample each row is.
        notes: remarks from applying the plan (e.g. a vector clipped to a short prompt).
    """

    prompts: list[str]
    texts: list[str]
    tokens: torch.Tensor
    prompt_width: int
    prompt_of_row: list[int]
    sample_of_row: list[int]
    settings: Sampling
    notes: list[str] = field(default_factory=list)

    def by_prompt(self) -> list[list[str]]:
        """Completions grouped per prompt, in sample order."""
        out: list[list[str]] = [[] for _ in self.prompts]
        for text, p in zip(self.texts, self.prompt_of_row, strict=True):
            out[p].append(text)
        return out


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    out = [prompts] if isinstance(prompts, str) else list(prompts)
    check(len(out) > 0, "no prompt given; give at least one")
    for p in out:
        if not isinstance(p, str) or not p.strip():
            raise WorkbenchError("the prompt is empty; give some text to continue")
    return out


def generate_rows(
    model: Model,
    prompts: Sequence[str],
    prompt_of_row: Sequence[int],
    sample_of_row: Sequence[int],
    plan: SteeringPlan | None,
    settings: Sampling,
    *,
    backend: str | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
) -> Generation:
    """Generate one completion per row; the building block of the functions below.

    Row ``r`` continues ``prompts[prompt_of_row[r]]`` with the noise of sample
    ``sample_of_row[r]``; a plan with coefficient lists gives row ``r`` coefficient ``r``.
    Rows run in chunks of ``batch_size`` (default: all at once).
    """
    prompts = _check_prompts(prompts)
    n_rows = len(prompt_of_row)
    check(n_rows == len(sample_of_row), "prompt_of_row and sample_of_row differ in length")
    check(n_rows > 0, "nothing to generate: no rows")
    check(
        all(0 <= p < len(prompts) for p in prompt_of_row),
        f"prompt_of_row names prompts outside 0..{len(prompts) - 1}",
    )
    if plan is not None and plan.rows is not None and plan.rows != n_rows:
        raise WorkbenchError(
            f"the plan has {plan.rows} coefficients per entry but {n_rows} rows are generated; "
            "give one coefficient per row"
        )
    backend = backend or default_backend(model)
    if plan is not None:
        plan.check(model)
    ids, mask, truncated = model.encode(prompts, padding_side="left")
    if any(truncated) or ids.shape[1] + settings.max_new_tokens > model.n_ctx:
        raise WorkbenchError(
            f"prompt ({ids.shape[1]} tokens) plus {settings.max_new_tokens} new tokens exceeds "
            f"the context of {model.n_ctx}; shorten the prompt or --max-new-tokens"
        )
    width = ids.shape[1]
    step = n_rows if batch_size is None else batch_size
    check(step >= 1, f"batch size must be at least 1, got {batch_size}")
    chunks: list[torch.Tensor] = []
    notes: list[str] = []
    for a in range(0, n_rows, step):
        rows = list(range(a, min(a + step, n_rows)))
        sel = torch.tensor([prompt_of_row[r] for r in rows])
        seeds = [row_seed(settings.seed, sample_of_row[r]) for r in rows]
        sub = None if plan is None or plan.rows is None else plan.select_rows(rows)
        out, chunk_notes = _generate_batch(
            model,
            ids[sel],
            mask[sel],
            plan if sub is None else sub,
            settings,
            seeds,
            backend=backend,
            use_cache=use_cache,
        )
        chunks.append(out)
        notes += [x for x in chunk_notes if x not in notes]
    new_len = max(c.shape[1] for c in chunks)
    tokens = torch.cat([_pad_right(c, new_len, model.pad_token_id) for c in chunks])
    eos = model.tokenizer.eos_token_id if settings.stop_at_eos else None
    texts = [_completion(model, row[width:], eos) for row in tokens]
    return Generation(
        prompts=prompts,
        texts=texts,
        tokens=tokens,
        prompt_width=width,
        prompt_of_row=list(prompt_of_row),
        sample_of_row=list(sample_of_row),
        settings=settings,
        notes=notes,
    )


def _pad_right(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    return torch.cat([t, torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)], 1)


def _completion(model: Model, new: torch.Tensor, eos: int | None) -> str:
    ids = new.tolist()
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return model.decode(ids)


def _generate_batch(
    model: Model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    plan: SteeringPlan | None,
    settings: Sampling,
    seeds: list[int],
    *,
    backend: str,
    use_cache: bool,
) -> tuple[torch.Tensor, list[str]]:
    """Generate for one batch; returns ``(tokens (batch, width + new), notes)``."""
    width = ids.shape[1]
    chain = processors(settings, width, seeds)
    chain.insert(0, safety.FiniteScores())  # NaN logits would decode as text
    lengths = mask.sum(1)  # (batch,)
    ctx: Any = contextlib.nullcontext()
    if plan is not None:
        ctx = apply_plan(
            model, plan, backend=backend, pad_offsets=width - lengths, prompt_lengths=lengths
        )
    with ctx as run, torch.inference_mode():
        if backend == "hf":
            out = _hf_generate(model, ids, mask, chain, settings, use_cache)
        else:
            out = _tl_generate(model, ids, mask, chain, settings, use_cache)
    return out, ([] if run is None else list(run.notes))


def _hf_generate(
    model: Model, ids: torch.Tensor, mask: torch.Tensor, chain: Any, s: Sampling, use_cache: bool
) -> torch.Tensor:
    from transformers import GenerationConfig

    if model.hf is None:
        raise WorkbenchError(f"model {model.name} has no transformers twin: use backend 'tl'")
    # Sampling is Gumbel noise inside `chain`, so transformers always decodes greedily here.
    # Without EOS stopping, an id no token has stands in for EOS (None would fall back to the
    # model's own EOS).
    eos = model.tokenizer.eos_token_id if s.stop_at_eos else None
    config = GenerationConfig(
        max_new_tokens=s.max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=use_cache,
        pad_token_id=model.pad_token_id,
        eos_token_id=eos if eos is not None else [int(model.hf.config.vocab_size) + 1],
    )
    out = model.hf.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        generation_config=config,
        logits_processor=chain,
    )
    return out.cpu()  # (batch, width + new)


def _tl_generate(
    model: Model, ids: torch.Tensor, mask: torch.Tensor, chain: Any, s: Sampling, use_cache: bool
) -> torch.Tensor:
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    tl = model.tl
    device = tl.cfg.device
    eos = model.tokenizer.eos_token_id if s.stop_at_eos else None
    tokens, full_mask = ids.to(device), mask.to(device)  # (batch, pos)
    cache = (
        TransformerLensKeyValueCache.init_cache(tl.cfg, device, ids.shape[0]) if use_cache else None
    )
    step_ids, step_mask = tokens, full_mask
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)  # (batch,)
    ones = torch.ones(ids.shape[0], 1, dtype=mask.dtype, device=device)  # (batch, 1)
    for _ in range(s.max_new_tokens):
        if cache is not None:
            logits = tl(step_ids, attention_mask=step_mask, past_kv_cache=cache)
        else:
            logits = tl(tokens, attention_mask=full_mask)
        scores = chain(tokens, logits[:, -1].float())  # (batch, vocab)
        nxt = scores.argmax(-1)  # (batch,)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, model.pad_token_id), nxt)
            done |= nxt == eos
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        full_mask = torch.cat([full_mask, ones], 1)
        step_ids, step_mask = nxt[:, None], ones
        if eos is not None and bool(done.all()):
            break
    return tokens.cpu()


def generate(
    model: Model,
    prompts: str | Sequence[str],
    plan: SteeringPlan | None = None,
    *,
    n: int = 1,
    sampling: Sampling = Sampling(),
    backend: str | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
) -> Generation:
    """``n`` completions of each prompt under ``plan`` (``None``: unsteered).

    Rows are prompt-major (row ``p * n + k`` is sample ``k`` of prompt ``p``); a plan with
    coefficient lists needs one coefficient per row. ``sampling`` defaults to plain sampling
    (temperature 1, no top-p or penalty, 40 new tokens, seed 0); ``Sampling(temperature=0)``
    is greedy.

    Example:
        >>> greedy = Sampling(max_new_tokens=20, temperature=0)               # doctest: +SKIP
        >>> gen = generate(model, "I hate you because", plan, sampling=greedy)  # doctest: +SKIP
        >>> gen.texts                                                          # doctest: +SKIP
    """
    prompts = _check_prompts(prompts)
    check(n >= 1, f"n must be at least 1, got {n}")
    rows = [(p, k) for p in range(len(prompts)) for k in range(n)]
    return generate_rows(
        model,
        prompts,
        [p for p, _ in rows],
        [k for _, k in rows],
        plan,
        sampling,
        backend=backend,
        use_cache=use_cache,
        batch_size=batch_size,
    )


def _with_baseline(plan: SteeringPlan, n: int) -> SteeringPlan:
    # Rows 0..n-1 run at coefficient 0 (exactly unsteered), rows n..2n-1 at the plan's own.
    entries = []
    for e in plan.entries:
        steered = e.coeff if isinstance(e.coeff, list) else [e.coeff] * n
        if len(steered) != n:
            raise WorkbenchError(
                f"entry '{e.label}' has {len(steered)} coefficients for {n} samples; give one "
                "coefficient (or one per sample)"
            )
        entries.append(e.with_coeff([0.0] * n + list(steered)))
    return SteeringPlan(entries)


def side_by_side(
    model: Model,
    prompt: str,
    plan: SteeringPlan,
    *,
    n: int = 4,
    sampling: Sampling = ACTADD_SAMPLING,
    backend: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Unsteered and steered completions of ``prompt`` under identical seeds and settings.

    ``sampling`` defaults to ActAdd's settings (temperature 1, top-p 0.3, frequency penalty 1,
    40 new tokens, seed 0). Both halves run in one batch: unsteered rows at coefficient 0
    (which leaves the model exactly unchanged) and steered rows, sample ``k`` of each sharing
    its sampling noise.

    Returns ``{"prompt", "plan", "unsteered": [n texts], "steered": [n texts], "settings",
    "notes"}``, completions excluding the prompt.
    """
    prompt = _check_prompts([prompt])[0]
    check(n >= 1, f"n must be at least 1, got {n}")
    gen = generate_rows(
        model,
        [prompt],
        [0] * (2 * n),
        list(range(n)) * 2,
        _with_baseline(plan, n),
        sampling,
        backend=backend,
        batch_size=batch_size,
    )
    return {
        "prompt": prompt,
        "plan": plan.to_json(),
        "unsteered": gen.texts[:n],
        "steered": gen.texts[n:],
        "settings": sampling.to_json(),
        "notes": gen.notes,
    }


def generate_with_coefficients(
    model: Model,
    prompt: str,
    entry: PlanEntry | SteeringVector,
    coeffs: Sequence[float],
    *,
    n: int = 4,
    sampling: Sampling = ACTADD_SAMPLING,
    backend: str | None = None,
    batch_size: int | None = None,
) -> list[list[str]]:
    """``n`` completions of ``prompt`` for each coefficient, all in one generate call.

    ``entry`` keeps its layers, position and units; only its coefficient varies. Sample ``k``
    shares its sampling noise across coefficients; ``sampling`` defaults to ActAdd's settings.
    Returns one list of ``n`` texts per coefficient, in the order given.
    """
    prompt = _check_prompts([prompt])[0]
    check(len(coeffs) > 0, "no coefficients given; give at least one")
    check(n >= 1, f"n must be at least 1, got {n}")
    base = entry if isinstance(entry, PlanEntry) else PlanEntry(entry, 0.0)
    plan = SteeringPlan([base.with_coeff([float(c) for c in coeffs for _ in range(n)])])
    gen = generate_rows(
        model,
        [prompt],
        [0] * (n * len(coeffs)),
        list(range(n)) * len(coeffs),
        plan,
        sampling,
        backend=backend,
        batch_size=batch_size,
    )
    return [gen.texts[i * n : (i + 1) * n] for i in range(len(coeffs))]
