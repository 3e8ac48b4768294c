"""Effect and side-effect measures for steering, from logits or from generated text.

All functions are pure: they take logits, token ids and texts produced elsewhere and never run a
model. The logit measures follow the ActAdd post (Turner et al., 2023): per-sentence perplexity
and the steered/unsteered perplexity ratio, ``KL(steered || unsteered)`` at the next token and
its per-token contributors, and the shift in probability mass on target tokens. The text measures
(word counts, distinct-n, repetition, sentiment) live in :mod:`workbench.measure.text_metrics` and are
re-exported here.

Conventions: ``logits`` are ``(batch, pos, vocab)``, ``tokens`` and ``mask`` are ``(batch, pos)``,
and ``mask`` is 1/True on real tokens and 0/False on padding (either side). Pass the steered run
as ``p`` and the unsteered run as ``q`` for ``KL(steered || unsteered)``, as in ActAdd.

>>> import torch
>>> logits = torch.zeros(1, 4, 10)  # uniform over 10 tokens
>>> sequence_perplexity(logits, torch.zeros(1, 4, dtype=torch.long)).round(decimals=4).tolist()
[10.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from workbench.errors import check
from workbench.measure.text_metrics import (
    WEDDING_WORDS,
    DistinctN,
    distinct_n,
    repetition_rate,
    sentiment,
    target_word_rate,
)

__all__ = [
    "WEDDING_WORDS",
    "DistinctN",
    "KLContribution",
    "distinct_n",
    "kl_contributors",
    "next_token_entropy",
    "next_token_kl",
    "perplexity_ratio",
    "repetition_rate",
    "sentiment",
    "sequence_perplexity",
    "target_logprob_shift",
    "target_word_rate",
    "token_logprobs",
]

Position = int | torch.Tensor


# --------------------------------------------------------------------------- logit measures


def _mask_or_ones(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    check(
        mask.shape == tokens.shape,
        f"mask shape {tuple(mask.shape)} differs from tokens shape {tuple(tokens.shape)}; "
        "pass the attention mask that came with these tokens",
    )
    return mask.bool()


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probability the model gave each next token: ``(batch, pos - 1)``.

    Entry ``[b, t]`` is ``log p(tokens[b, t + 1] | tokens[b, :t + 1])``, read from
    ``logits[b, t]``. A target counts only when both it and the position predicting it are real
    tokens, so padding on either side and each sequence's first real token (which nothing
    predicts) are excluded; excluded entries are exactly 0.0, which keeps sums correct.
    Computed in float32 at least, so half-precision logits do not lose the tail.

    >>> lp = token_logprobs(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]))
    >>> lp.shape, round(float(lp[0, 0].exp()), 4)
    (torch.Size([1, 2]), 0.25)
    """
    check(logits.dim() == 3, f"logits must be (batch, pos, vocab), got {tuple(logits.shape)}")
    check(logits.is_floating_point(), f"logits must be a float tensor, got {logits.dtype}")
    check(
        tokens.shape == logits.shape[:2],
        f"tokens shape {tuple(tokens.shape)} does not match logits (batch, pos) "
        f"{tuple(logits.shape[:2])}",
    )
    check(logits.shape[1] >= 2, "need at least 2 positions to score a next token")
    check(not tokens.is_floating_point(), f"tokens must be integer ids, got {tokens.dtype}")
    valid = _mask_or_ones(mask, tokens)
    vocab = logits.shape[-1]
    check(
        bool(((tokens >= 0) & (tokens < vocab))[valid].all()),
        f"token ids must lie in [0, {vocab}); do tokens and logits come from the same model?",
    )
    at_least_32 = torch.promote_types(logits.dtype, torch.float32)
    work = logits[:, :-1].to(at_least_32)  # (batch, pos-1, vocab)
    targets = tokens[:, 1:].clamp(0, vocab - 1)  # (batch, pos-1); padding ids may be anything
    chosen = work.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (batch, pos-1)
    logprobs = chosen - torch.logsumexp(work, dim=-1)  # (batch, pos-1)
    scored = valid[:, 1:] & valid[:, :-1]  # (batch, pos-1)
    return torch.where(scored, logprobs, torch.zeros_like(logprobs))


def sequence_perplexity(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sentence perplexity ``exp(mean NLL)`` over scored tokens: ``(batch,)`` float64.

    Scored tokens are those :func:`token_logprobs` keeps: real tokens after the first. ActAdd
    scores each sentence separately, which tracks damage more conservatively than pooling.

    >>> ppl = sequence_perplexity(torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long))
    >>> ppl.round(decimals=4).tolist()
    [7.0, 7.0]
    """
    logprobs = token_logprobs(logits, tokens, mask).double()  # (batch, pos-1)
    valid = _mask_or_ones(mask, tokens)
    counts = (valid[:, 1:] & valid[:, :-1]).sum(dim=-1)  # (batch,)
    empty = (counts == 0).nonzero().flatten().tolist()
    check(
        not empty,
        f"sequences {empty} have fewer than 2 real tokens, so nothing is predicted; "
        "drop them or prepend a BOS token",
    )
    return torch.exp(-logprobs.sum(dim=-1) / counts)  # (batch,)


def perplexity_ratio(
    steered_ppl: torch.Tensor | Sequence[float], unsteered_ppl: torch.Tensor | Sequence[float]
) -> torch.Tensor:
    """Per-sentence ``steered / unsteered`` perplexity: ``(batch,)`` float64.

    Below 1 the steered model predicts the sentence better (the wanted effect on on-topic text);
    above 1 it predicts it worse (damage, when the text is off-topic).

    >>> perplexity_ratio([12.0, 10.0], [10.0, 10.0]).tolist()
    [1.2, 1.0]
    """
    steered = torch.as_tensor(steered_ppl, dtype=torch.float64).reshape(-1)  # (batch,)
    unsteered = torch.as_tensor(unsteered_ppl, dtype=torch.float64).reshape(-1)  # (batch,)
    check(
        steered.shape == unsteered.shape,
        f"perplexity lists differ in length ({steered.numel()} vs {unsteered.numel()}); "
        "score the same sentences with and without steering",
    )
    check(steered.numel() > 0, "perplexity lists are empty; score at least one sentence")
    check(
        bool((steered > 0).all() & (unsteered > 0).all()),
        "perplexities must be positive; pass perplexities, not log-probabilities",
    )
    return steered / unsteered


def _at_position(logits: torch.Tensor, position: Position | None, name: str) -> torch.Tensor:
    """Select ``(batch, vocab)`` logits from ``(batch, vocab)`` or ``(batch, pos, vocab)``.

    ``position`` None means the last position; it is refused for 2-D logits, which have no
    positions, rather than silently ignored.
    """
    check(logits.is_floating_point(), f"{name} must be a float tensor, got {logits.dtype}")
    if logits.dim() == 2:
        check(
            position is None,
            f"{name} is (batch, vocab) and has no positions; drop position= or pass "
            "(batch, pos, vocab) logits",
        )
        return logits
    check(
        logits.dim() == 3,
        f"{name} must be (batch, vocab) or (batch, pos, vocab), got shape {tuple(logits.shape)}",
    )
    batch, pos, _ = logits.shape
    if position is None:
        return logits[:, -1]
    if isinstance(position, int):
        check(-pos <= position < pos, f"position {position} is outside {name}'s {pos} positions")
        return logits[:, position]
    # One position per row: right-padded batches end at different places.
    index = torch.as_tensor(position, dtype=torch.long).reshape(-1)  # (batch,)
    check(
        index.numel() == batch,
        f"position must give one index per row ({batch}), got {index.numel()}",
    )
    check(bool(((index >= -pos) & (index < pos)).all()), f"positions must lie in [-{pos}, {pos})")
    return logits[torch.arange(batch), index % pos]  # (batch, vocab)


def _log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    # float64: KL between nearly equal distributions is a small difference of large numbers.
    return torch.log_softmax(logits.double(), dim=-1)


def _pair(
    logits_p: torch.Tensor, logits_q: torch.Tensor, position: Position | None
) -> tuple[torch.Tensor, torch.Tensor]:
    check(
        logits_p.shape == logits_q.shape,
        f"logits shapes differ: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}; "
        "compare runs of the same model on the same prompts",
    )
    p = _at_position(logits_p, position, "logits_p")
    q = _at_position(logits_q, position, "logits_q")
    return _log_softmax64(p), _log_softmax64(q)


def next_token_kl(
    logits_p: torch.Tensor, logits_q: torch.Tensor, position: Position | None = None
) -> torch.Tensor:
    """``KL(p || q)`` in nats between next-token distributions: ``(batch,)`` float64.

    Logits may be ``(batch, vocab)`` or ``(batch, pos, vocab)``; for the latter ``position``
    picks the prediction (an int, or one index per row for right-padded batches; default the
    last position).

    >>> next_token_kl(torch.zeros(1, 5), torch.zeros(1, 5)).tolist()
    [0.0]
    """
    logp, logq = _pair(logits_p, logits_q, position)  # (batch, vocab) each
    return (logp.exp() * (logp - logq)).sum(dim=-1)  # (batch,)


class KLContribution(NamedTuple):
    """One token's share of ``KL(p || q)``: ``p * (log p - log q)``, and both probabilities."""

    token_id: int
    contribution: float
    p: float
    q: float


def kl_contributors(
    logits_p: torch.Tensor, logits_q: torch.Tensor, k: int = 10, position: Position | None = None
) -> list[KLContribution]:
    """The ``k`` tokens contributing most to ``KL(p || q)`` for one prompt, largest first.

    Contributions over the whole vocabulary sum to the total KL; single ones are negative where
    ``q > p`` (tokens the steered model dropped) and so never rank at the top. This is ActAdd's
    "top 10 contributors to the KL" table. Takes one distribution: ``(vocab,)``, or a batch of one
    in the shapes :func:`next_token_kl` accepts; index a batch first (``logits[i:i+1]``).

    >>> p = torch.tensor([2.0, 0.0, 0.0])
    >>> top = kl_contributors(p, torch.zeros(3), k=1)
    >>> top[0].token_id, top[0].p > top[0].q
    (0, True)
    """
    check(k >= 1, f"k must be >= 1, got {k}")
    if logits_p.dim() == 1:
        logits_p, logits_q = logits_p.unsqueeze(0), logits_q.unsqueeze(0)
    check(
        logits_p.shape[0] == 1,
        f"kl_contributors takes one prompt, got a batch of {logits_p.shape[0]}; pass logits[i:i+1]",
    )
    logp, logq = _pair(logits_p, logits_q, position)
    logp, logq = logp[0], logq[0]  # (vocab,)
    contributions = logp.exp() * (logp - logq)  # (vocab,)
    values, ids = contributions.topk(min(k, contributions.numel()))
    return [
        KLContribution(int(i), float(v), float(logp[i].exp()), float(logq[i].exp()))
        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
    ]


def next_token_entropy(logits: torch.Tensor, position: Position | None = None) -> torch.Tensor:
    """Entropy in nats of the next-token distribution: ``(batch,)`` float64.

    >>> round(float(next_token_entropy(torch.zeros(1, 8))[0].exp()), 6)
    8.0
    """
    logp = _log_softmax64(_at_position(logits, position, "logits"))  # (batch, vocab)
    return -(logp.exp() * logp).sum(dim=-1)


def target_logprob_shift(
    logits_steered: torch.Tensor,
    logits_unsteered: torch.Tensor,
    target_ids: Sequence[int] | torch.Tensor,
    position: Position | None = None,
) -> torch.Tensor:
    """Change in ``log P(next token in targets)`` from steering: ``(batch,)`` float64.

    The probability of the target set is the total mass on its tokens, so a shift of ``log 2``
    means steering doubled the chance the next token is a target (e.g. " wedding", " bride").
    Duplicate ids are counted once.

    >>> steered = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    >>> round(float(target_logprob_shift(steered, steered, [1, 2])[0]), 6)
    0.0
    """
    ids = torch.as_tensor(target_ids, dtype=torch.long).reshape(-1).unique()  # (n_targets,)
    check(ids.numel() > 0, "target_ids is empty; pass the token ids of the target words")
    logs, logu = _pair(logits_steered, logits_unsteered, position)  # (batch, vocab) each
    vocab = logs.shape[-1]
    check(
        bool(((ids >= 0) & (ids < vocab)).all()),
        f"target ids must lie in [0, {vocab}); tokenize the targets with this model's tokenizer",
    )
    mass_s = torch.logsumexp(logs[:, ids], dim=-1)  # (batch,)
    mass_u = torch.logsumexp(logu[:, ids], dim=-1)  # (batch,)
    return mass_s - mass_u
