from __future__ import annotations

from typing import Any

import torch
from transformers import TopPLogitsWarper

from workbench.steer.sampling import FrequencyPenalty, Sampling, TopP, processors, row_seed


def _no_ids(rows: int) -> Any:
    return torch.zeros(rows, 0, dtype=torch.long)  # no tokens generated yet


def test_gumbel_sampling_follows_the_softmax_and_top_p() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0]).expand(4000, 4)  # (rows, vocab)
    probs = torch.softmax(logits[0], -1)
    chain = processors(Sampling(top_p=1.0), 0, [row_seed(0, k) for k in range(4000)])
    picks = chain(_no_ids(4000), logits.clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert (freq - probs).abs().max() < 0.03
    nucleus = processors(Sampling(top_p=0.7), 0, [row_seed(0, k) for k in range(4000)])
    picks = nucleus(_no_ids(4000), logits.clone()).argmax(-1)
    kept = probs[2:] / probs[2:].sum()  # top-p 0.7 keeps the two likeliest tokens
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert freq[:2].sum() == 0 and (freq[2:] - kept).abs().max() < 0.03


def test_frequency_penalty_counts_generated_tokens_only() -> None:
    pen = FrequencyPenalty(0.5, prompt_width=2)
    scores = torch.zeros(1, 8)
    assert torch.equal(pen(torch.tensor([[5, 5]]), scores), scores)  # prompt only: no penalty
    out = pen(torch.tensor([[5, 5, 3]]), scores)
    out = pen(torch.tensor([[5, 5, 3, 3]]), scores)
    out = pen(torch.tensor([[5, 5, 3, 3, 6]]), scores)
    expected = torch.zeros(1, 8)
    expected[0, 3], expected[0, 6] = -1.0, -0.5
    assert torch.equal(out, expected)


def test_fast_top_p_equals_transformers_top_p() -> None:
    ids = _no_ids(6)
    for scale in (0.5, 4.0):  # flat: falls back to the full sort; peaked: top-k path
        scores = torch.randn(6, 3000, generator=torch.Generator().manual_seed(1)) * scale
        for p in (0.1, 0.3, 0.9):
            ours = TopP(p, k=64)(ids, scores.clone())
            assert torch.equal(ours, TopPLogitsWarper(p)(ids, scores.clone()))
            assert 0 < int(torch.isfinite(ours).sum()) < scores.numel()
