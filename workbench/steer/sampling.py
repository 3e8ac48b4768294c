"""Sampling settings and the logits processors that implement them.

Sampling is done as *Gumbel-max*: each row's processed scores get Gumbel noise drawn from that
row's own generator, and the model's greedy step picks the argmax, which is an exact sample from
the softmax of the processed scores. The generator of a row is seeded by ``(seed, sample
index)``, not by its place in the batch, so

* the unsteered and steered completions of side-by-side runs share their sampling noise,
* sample ``k`` under coefficient ``a`` and under coefficient ``b`` share it too (common random
  numbers make coefficient curves far less noisy), and
* a batched run draws the same samples as separate runs.

Processors follow the transformers ``LogitsProcessor`` interface (``(input_ids, scores) ->
scores``), so the same chain serves ``model.hf.generate`` and the TransformerLens loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from workbench.errors import WorkbenchError

# ActAdd's settings ("Steering GPT-2-XL by adding an activation vector").
ACTADD = {"temperature": 1.0, "top_p": 0.3, "freq_penalty": 1.0}


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen. ``temperature=0`` is greedy decoding.

    ``freq_penalty`` is OpenAI's frequency penalty: ``freq_penalty x (times the token was
    generated so far)`` is subtracted from its logit (prompt tokens are not counted). It is
    applied first, then temperature, then top-p.
    """

    max_new_tokens: int = 40
    temperature: float = 1.0
    top_p: float = 1.0
    freq_penalty: float = 0.0
    seed: int = 0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise WorkbenchError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise WorkbenchError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise WorkbenchError(f"top-p must be in (0, 1], got {self.top_p}")
        if not math.isfinite(self.freq_penalty):
            raise WorkbenchError(f"frequency penalty must be finite, got {self.freq_penalty}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise WorkbenchError(f"seed must be a non-negative integer, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ActAdd's settings as a Sampling, with 40 new tokens and seed 0 (``dataclasses.replace`` for others).
ACTADD_SAMPLING = Sampling(
    temperature=ACTADD["temperature"], top_p=ACTADD["top_p"], freq_penalty=ACTADD["freq_penalty"]
)


def row_seed(seed: int, sample: int) -> int:
    """The generator seed of sample ``sample`` under run seed ``seed``."""
    return (seed * 1_000_003 + sample * 7_919 + 1) % (2**63 - 1)


class FrequencyPenalty(LogitsProcessor):
    """Subtract ``penalty x count`` of each token among the tokens generated so far."""

    def __init__(self, penalty: float, prompt_width: int) -> None:
        self.penalty = penalty
        self.prompt_width = prompt_width
        self._counts: torch.Tensor | None = None  # (batch, vocab)
        self._seen = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if self._counts is None or self._counts.shape != scores.shape or length < self._seen:
            self._counts = torch.zeros_like(scores)
            self._seen = self.prompt_width
        # Count only the tokens added since the last call (one per step): no per-step rescan.
        new = input_ids[:, self._seen : length]  # (batch, new)
        if new.numel():
            self._counts.scatter_add_(1, new, torch.ones_like(new, dtype=scores.dtype))
        self._seen = length
        return scores - self.penalty * self._counts


class TopP(LogitsProcessor):
    """Nucleus filter, as transformers' ``TopPLogitsWarper`` but without a full sort per step.

    A token is kept when the probability of the tokens more likely than it is below ``top_p``.
    The nucleus is looked for among the ``k`` likeliest tokens first (a top-k is ~60x cheaper
    than sorting a 49k vocabulary); rows whose nucleus is larger fall back to the full sort.
    """

    def __init__(self, top_p: float, k: int = 256) -> None:
        self.top_p = top_p
        self.k = k
        self._full = TopPLogitsWarper(top_p, min_tokens_to_keep=1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        probs = torch.softmax(scores.float(), dim=-1)  # (batch, vocab)
        top, idx = probs.topk(k, dim=-1)  # (batch, k), descending
        above = top.cumsum(-1) - top  # (batch, k) mass of the more likely tokens
        if not bool((above[:, -1] + top[:, -1] >= self.top_p).all()):
            return self._full(input_ids, scores)  # type: ignore[no-any-return]
        keep = above < self.top_p  # (batch, k); the likeliest token is always kept
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, keep)
        return scores.masked_fill(~mask, float("-inf"))


class GumbelNoise(LogitsProcessor):
    """Add per-row Gumbel noise so that the argmax is a sample (see module docstring)."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self._gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self._gens):
            raise WorkbenchError(
                f"sampling noise was set up for {len(self._gens)} rows, got {scores.shape[0]}"
            )
        vocab = scores.shape[1]
        u = torch.stack([torch.rand(vocab, generator=g) for g in self._gens])  # (batch, vocab)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))  # (batch, vocab)
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def processors(settings: Sampling, prompt_width: int, seeds: Sequence[int]) -> LogitsProcessorList:
    """The chain for one generate call: penalty, temperature, top-p, noise (if sampling)."""
    chain = LogitsProcessorList()
    if settings.freq_penalty != 0:
        chain.append(FrequencyPenalty(settings.freq_penalty, prompt_width))
    if settings.greedy:
        return chain
    if settings.temperature != 1:
        chain.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_p < 1:
        chain.append(TopP(settings.top_p))
    chain.append(GumbelNoise(seeds))
    return chain
