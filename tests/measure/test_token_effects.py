"""Per-token log-probability change under a plan (the coloured passage of the dashboard)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.measure.metrics import token_logprobs
from workbench.measure.token_effects import token_logprob_changes
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.plan import SteeringPlan
from workbench.vectors.build import from_prompts

TEXT = "The wedding was lovely and the bride smiled"


@pytest.fixture(scope="module")
def plan(tiny_model: Model) -> SteeringPlan:
    return SteeringPlan.of(from_prompts(tiny_model, "Love", "Hate", layers=1), 6.0)


def test_matches_two_scored_forward_passes(tiny_model: Model, plan: SteeringPlan) -> None:
    fx = token_logprob_changes(tiny_model, TEXT, plan)
    base = steered_logits(tiny_model, [TEXT], None)
    steer = steered_logits(tiny_model, [TEXT], plan)
    want_base = token_logprobs(base.logits, base.ids, base.mask)[0]  # (pos - 1,)
    want_steer = token_logprobs(steer.logits, steer.ids, steer.mask)[0]
    n = int(base.mask.sum())
    assert len(fx.tokens) == n - 1  # every token after BOS is scored
    assert fx.ids == base.ids[0, 1:n].tolist()
    assert fx.prefix == ""
    assert torch.allclose(torch.tensor(fx.unsteered), want_base[: n - 1], atol=1e-6)
    assert torch.allclose(torch.tensor(fx.steered), want_steer[: n - 1], atol=1e-6)
    assert "".join(fx.tokens) == TEXT
    assert fx.mean_delta == pytest.approx(sum(fx.delta) / len(fx.delta))


def test_front_vector_changes_tokens_after_its_window_only(
    tiny_model: Model, plan: SteeringPlan
) -> None:
    fx = token_logprob_changes(tiny_model, TEXT, plan)
    # The vector's BOS row is zero, so the first token (predicted from BOS) is untouched.
    assert fx.delta[0] == 0.0
    assert max(abs(d) for d in fx.delta[1:]) > 1e-3
    up = fx.top(3)
    assert [d for _, d in up] == sorted(fx.delta, reverse=True)[:3]
    assert fx.top(2, largest=False)[0][1] == min(fx.delta)


def test_coefficient_zero_changes_nothing(tiny_model: Model, plan: SteeringPlan) -> None:
    zero = SteeringPlan([plan.entries[0].with_coeff(0.0)])
    fx = token_logprob_changes(tiny_model, TEXT, zero)
    assert fx.delta == [0.0] * len(fx.tokens)
    assert fx.to_json()["mean_delta"] == 0.0


def test_bad_inputs(tiny_model: Model, plan: SteeringPlan) -> None:
    with pytest.raises(WorkbenchError, match="passage is empty"):
        token_logprob_changes(tiny_model, "  ", plan)
    listed = SteeringPlan([plan.entries[0].with_coeff([1.0, 2.0])])
    with pytest.raises(WorkbenchError, match="give one coefficient"):
        token_logprob_changes(tiny_model, TEXT, listed)
