"""Per-token log-probability change under a steering plan, for colouring a passage.

ActAdd's post shows a passage with each token coloured by how much more (green) or less (red)
likely the steered model finds it than the unsteered one. :func:`token_logprob_changes` computes
exactly that: ``log p_steered(token | prefix) - log p_unsteered(token | prefix)`` for every token
of one text, from two forward passes (:func:`workbench.steer.forward.steered_logits`) read with
:func:`workbench.measure.metrics.token_logprobs`.

The passage is its own prompt for the plan's position policy, so a ``front``-aligned vector is
added at the passage's first positions, as in ActAdd's perplexity experiments.

Example:
    >>> fx = token_logprob_changes(model, "I went to a wedding", plan)   # doctest: +SKIP
    >>> [(t, round(d, 2)) for t, d in zip(fx.tokens, fx.delta)]           # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.errors import check
from workbench.measure.metrics import token_logprobs
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.plan import SteeringPlan


@dataclass
class TokenEffects:
    """Log-probabilities of each token of a passage, unsteered and steered.

    Attributes:
        text: the passage.
        prefix: leading text that nothing predicts (empty when the model has a BOS token, which
            predicts the first token).
        tokens: the text of each scored token, in order (their concatenation is the passage
            after ``prefix``, up to tokenizer normalisation).
        ids: their token ids.
        unsteered / steered: ``log p(token | prefix)`` in nats, without and with the plan.
    """

    text: str
    prefix: str
    tokens: list[str]
    ids: list[int]
    unsteered: list[float]
    steered: list[float]

    @property
    def delta(self) -> list[float]:
        """Steered minus unsteered log-probability per token (positive: steering favours it)."""
        return [s - u for s, u in zip(self.steered, self.unsteered, strict=True)]

    @property
    def mean_delta(self) -> float:
        """Mean change over the passage's tokens (nats per token)."""
        d = self.delta
        return sum(d) / len(d) if d else 0.0

    def top(self, k: int = 5, *, largest: bool = True) -> list[tuple[str, float]]:
        """The ``k`` tokens whose log-probability rose most (or, ``largest=False``, fell most)."""
        pairs = list(zip(self.tokens, self.delta, strict=True))
        pairs.sort(key=lambda p: p[1], reverse=largest)
        return pairs[: max(0, k)]

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prefix": self.prefix,
            "tokens": self.tokens,
            "ids": self.ids,
            "unsteered": self.unsteered,
            "steered": self.steered,
            "delta": self.delta,
            "mean_delta": self.mean_delta,
        }


def token_logprob_changes(
    model: Model,
    text: str,
    plan: SteeringPlan,
    *,
    backend: str | None = None,
    max_tokens: int | None = None,
) -> TokenEffects:
    """Per-token log-probability of ``text`` with and without ``plan`` (see module docstring).

    The plan must broadcast over one text (a single coefficient per entry, not a list).
    """
    check(isinstance(text, str) and bool(text.strip()), "the passage is empty; give some text")
    check(
        plan.rows in (None, 1),
        f"the plan has {plan.rows} coefficients per entry; give one coefficient to score a passage",
    )
    plan.check(model)
    base = steered_logits(model, [text], None, backend=backend, max_tokens=max_tokens)
    steer = steered_logits(model, [text], plan, backend=backend, max_tokens=max_tokens)
    lp_base = token_logprobs(base.logits, base.ids, base.mask)[0]  # (pos - 1,)
    lp_steer = token_logprobs(steer.logits, steer.ids, steer.mask)[0]  # (pos - 1,)
    ids = base.ids[0]  # (pos,)
    # Position 0 is BOS when the model has one; only it goes unscored then.
    first = 1 if model.bos_token_id is not None else 0
    n = int(base.mask[0].sum())
    scored = list(range(max(first, 1), n))  # token indices that something predicts
    check(len(scored) > 0, "the passage is a single token; give at least two tokens to score")
    tok = model.tokenizer
    return TokenEffects(
        text=text,
        prefix=model.decode(ids[first : scored[0]]),
        tokens=[str(tok.decode([int(ids[i])])) for i in scored],
        ids=[int(ids[i]) for i in scored],
        unsteered=[float(lp_base[i - 1]) for i in scored],
        steered=[float(lp_steer[i - 1]) for i in scored],
    )
