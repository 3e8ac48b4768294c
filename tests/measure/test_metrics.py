"""Tests for workbench.measure.metrics on distributions whose answers can be worked out by hand."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import workbench.measure.metrics
from workbench.errors import WorkbenchError
from workbench.measure.metrics import (
    WEDDING_WORDS,
    distinct_n,
    kl_contributors,
    next_token_entropy,
    next_token_kl,
    perplexity_ratio,
    repetition_rate,
    sentiment,
    sequence_perplexity,
    target_logprob_shift,
    target_word_rate,
    token_logprobs,
)

VOCAB = 11


def one_hot_logits(tokens: torch.Tensor, vocab: int = VOCAB, scale: float = 1e4) -> torch.Tensor:
    """Logits that put (almost) all mass on the actual next token."""
    batch, pos = tokens.shape
    logits = torch.zeros(batch, pos, vocab)  # (batch, pos, vocab)
    logits[:, :-1].scatter_(-1, tokens[:, 1:].unsqueeze(-1), scale)
    return logits


# --------------------------------------------------------------------------- perplexity


def test_uniform_distribution_has_perplexity_vocab() -> None:
    tokens = torch.randint(0, VOCAB, (3, 6))
    ppl = sequence_perplexity(torch.zeros(3, 6, VOCAB), tokens)
    assert ppl.dtype == torch.float64
    assert torch.allclose(ppl, torch.full((3,), float(VOCAB), dtype=torch.float64))


def test_correct_one_hot_prediction_has_perplexity_one() -> None:
    tokens = torch.randint(0, VOCAB, (2, 5))
    ppl = sequence_perplexity(one_hot_logits(tokens), tokens)
    assert torch.allclose(ppl, torch.ones(2, dtype=torch.float64))


def test_padding_and_first_token_are_excluded() -> None:
    tokens = torch.tensor([[3, 4, 5, 0, 0], [0, 0, 3, 4, 5]])  # right- and left-padded
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    logits = one_hot_logits(tokens)
    # Make every prediction of a padding position, or from one, terrible: it must not count.
    logits[0, 2:] = torch.zeros(VOCAB).index_fill(0, torch.tensor([7]), 1e4)
    logits[1, :2] = torch.zeros(VOCAB).index_fill(0, torch.tensor([7]), 1e4)
    ppl = sequence_perplexity(logits, tokens, mask)
    assert torch.allclose(ppl, torch.ones(2, dtype=torch.float64))
    lp = token_logprobs(logits, tokens, mask)
    assert lp.shape == (2, 4)
    assert lp[0, 2:].eq(0).all() and lp[1, :2].eq(0).all()  # excluded entries are exactly 0


def test_perplexity_of_known_two_token_mix() -> None:
    # p(next) = 1/4 at one step and 1/2 at the other: ppl = exp(mean(log 4, log 2)) = sqrt(8).
    logits = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5], [0.5, 0.5]]]))  # (1, 3, 2)
    tokens = torch.tensor([[0, 0, 1]])
    ppl = sequence_perplexity(logits, tokens)
    assert float(ppl[0]) == pytest.approx(math.sqrt(8.0), rel=1e-6)


def test_half_precision_logits_are_upcast() -> None:
    tokens = torch.randint(0, VOCAB, (1, 4))
    ppl = sequence_perplexity(torch.zeros(1, 4, VOCAB, dtype=torch.bfloat16), tokens)
    assert float(ppl[0]) == pytest.approx(VOCAB, rel=1e-5)


def test_perplexity_input_errors() -> None:
    with pytest.raises(WorkbenchError, match="does not match"):
        sequence_perplexity(torch.zeros(2, 4, VOCAB), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(WorkbenchError, match="mask shape"):
        sequence_perplexity(
            torch.zeros(1, 4, VOCAB), torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3)
        )
    with pytest.raises(WorkbenchError, match="fewer than 2 real tokens"):
        sequence_perplexity(
            torch.zeros(1, 3, VOCAB), torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 0, 1]])
        )
    with pytest.raises(WorkbenchError, match="token ids"):
        sequence_perplexity(torch.zeros(1, 3, VOCAB), torch.full((1, 3), VOCAB))


def test_perplexity_ratio() -> None:
    ratio = perplexity_ratio(torch.tensor([12.0, 5.0]), [10.0, 10.0])
    assert ratio.tolist() == pytest.approx([1.2, 0.5])
    with pytest.raises(WorkbenchError, match="differ in length"):
        perplexity_ratio([1.0], [1.0, 2.0])
    with pytest.raises(WorkbenchError, match="positive"):
        perplexity_ratio([-1.0], [1.0])


# --------------------------------------------------------------------------- next-token measures


def test_kl_of_identical_logits_is_zero_and_matches_closed_form() -> None:
    logits = torch.randn(4, 3, VOCAB)
    assert torch.allclose(next_token_kl(logits, logits), torch.zeros(4, dtype=torch.float64))
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(next_token_kl(p.log(), q.log())[0]) == pytest.approx(expected, abs=1e-7)


def test_kl_position_per_row() -> None:
    logits_p = torch.zeros(2, 3, VOCAB)
    logits_q = torch.zeros(2, 3, VOCAB)
    logits_p[0, 1, 0] = 5.0  # only row 0's position 1 differs
    kl = next_token_kl(logits_p, logits_q, position=torch.tensor([1, 2]))
    assert kl[0] > 0 and kl[1] == 0
    assert next_token_kl(logits_p, logits_q)[0] == 0  # default: last position
    with pytest.raises(WorkbenchError, match="one index per row"):
        next_token_kl(logits_p, logits_q, position=torch.tensor([1]))
    with pytest.raises(WorkbenchError, match="no positions"):
        next_token_kl(logits_p[:, 0], logits_q[:, 0], position=0)
    with pytest.raises(WorkbenchError, match="shapes differ"):
        next_token_kl(logits_p, torch.zeros(2, 3, VOCAB + 1))


def test_kl_contributors_sum_to_total_and_rank_the_steered_token_first() -> None:
    torch.manual_seed(0)
    logits_q = torch.randn(1, 2, 50)  # (1, pos, vocab)
    logits_p = logits_q.clone()
    logits_p[0, -1, 7] += 4.0  # steering boosts token 7 ("wedding")
    total = float(next_token_kl(logits_p, logits_q)[0])
    everything = kl_contributors(logits_p, logits_q, k=50)
    assert sum(c.contribution for c in everything) == pytest.approx(total, abs=1e-9)
    top = kl_contributors(logits_p, logits_q, k=3)
    assert len(top) == 3 and top[0].token_id == 7 and top[0].p > top[0].q
    assert [c.contribution for c in top] == sorted((c.contribution for c in top), reverse=True)
    assert kl_contributors(logits_p[0, -1], logits_q[0, -1], k=1)[0].token_id == 7
    with pytest.raises(WorkbenchError, match="one prompt"):
        kl_contributors(torch.zeros(2, VOCAB), torch.zeros(2, VOCAB))


def test_entropy_of_uniform_is_log_vocab_and_of_one_hot_is_zero() -> None:
    assert float(next_token_entropy(torch.zeros(1, 4, VOCAB))[0]) == pytest.approx(math.log(VOCAB))
    peaked = torch.zeros(1, VOCAB)
    peaked[0, 3] = 1e4
    assert float(next_token_entropy(peaked)[0]) == pytest.approx(0.0, abs=1e-9)


def test_target_logprob_shift() -> None:
    unsteered = torch.zeros(1, 4)  # targets {0, 1} hold 1/2 of the mass
    steered = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0]]) + 1e-30)  # targets hold all of it
    shift = target_logprob_shift(steered, unsteered, [0, 1, 1])  # duplicate counted once
    assert float(shift[0]) == pytest.approx(math.log(2.0), abs=1e-9)
    with pytest.raises(WorkbenchError, match="empty"):
        target_logprob_shift(steered, unsteered, [])
    with pytest.raises(WorkbenchError, match="target ids"):
        target_logprob_shift(steered, unsteered, [4])


# --------------------------------------------------------------------------- text measures


def test_distinct_n_hand_examples() -> None:
    d1 = distinct_n(["a b a b", "c"], n=1)
    assert d1.per_text == [0.5, 1.0]
    assert d1.pooled == pytest.approx(3 / 5)
    d2 = distinct_n(["The cat the cat", "x"], n=2)  # lowercased: 'the cat' twice, 'cat the'
    assert d2.per_text == [pytest.approx(2 / 3), 0.0]  # one word has no bigrams
    assert d2.pooled == pytest.approx(2 / 3)
    same = distinct_n(["a b c", "a b c"], n=2)  # copies of each other lower the pooled score
    assert same.per_text == [1.0, 1.0] and same.pooled == 0.5
    assert distinct_n([""], n=2).to_json() == {"n": 2, "per_text": [0.0], "pooled": 0.0}
    with pytest.raises(WorkbenchError, match="one string"):
        distinct_n("a b c")
    with pytest.raises(WorkbenchError, match="no texts"):
        distinct_n([])


def test_repetition_rate() -> None:
    assert repetition_rate("one two three four five") == 0.0
    # 12 words give 9 four-grams, of which only the first 4 are new.
    looping = "I love you so i love you so I love you so"
    assert repetition_rate(looping) == pytest.approx(5 / 9)
    assert repetition_rate("too short") == 0.0
    assert repetition_rate("a a a a", n=1) == pytest.approx(0.75)


def test_target_word_rate_counts_whole_words_case_insensitively() -> None:
    text = "Wedding bells! The bride's WEDDINGS; prewedding jitters, wedded bliss, wed."
    # Wedding, bride('s), WEDDINGS, wed. Not prewedding, not wedded (no stemming).
    assert target_word_rate(text, WEDDING_WORDS) == 4
    assert target_word_rate("Nothing here.", WEDDING_WORDS) == 0
    assert target_word_rate("a Wedding  Planner and a wedding", ["wedding planner"]) == 1
    with pytest.raises(WorkbenchError, match="empty"):
        target_word_rate("x", [])
    with pytest.raises(WorkbenchError, match="not one string"):
        target_word_rate("wedding", "wedding")
    with pytest.raises(WorkbenchError, match="empty word"):
        target_word_rate("x", ["wedding", " "])


def test_vader_sentiment_signs() -> None:
    scores = sentiment(["I love you, you are wonderful", "I hate you"])
    assert scores[0] > 0.5 and scores[1] < -0.3
    with pytest.raises(WorkbenchError, match="one string"):
        sentiment("I love you")


def test_docstring_examples() -> None:
    result = doctest.testmod(workbench.measure.metrics)
    assert result.attempted > 0 and result.failed == 0
