from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.steer.forward import coefficient_batch, iter_steered_logits, steered_logits
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.vector import SteeringVector

TEXTS = ["Hello world, I love you and the fox", "The fox", "I hate you"]


def _vec(model: Model, layer: int, shape: tuple[int, ...]) -> SteeringVector:
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return SteeringVector({layer: t}, model=model.name, d_model=model.d_model)


@pytest.mark.parametrize("shape", [(3, 64), (64,)])
def test_hf_and_tl_give_the_same_steered_logits(tiny_model: Model, shape: tuple[int, ...]) -> None:
    plan = SteeringPlan.of(
        _vec(tiny_model, 1, shape), 3.0, position="back" if len(shape) > 1 else None
    )
    tl = steered_logits(tiny_model, TEXTS, plan, backend="tl")
    hf = steered_logits(tiny_model, TEXTS, plan, backend="hf")
    clean = steered_logits(tiny_model, TEXTS, None, backend="hf")
    keep = tl.mask.bool()
    assert torch.equal(tl.ids, hf.ids) and torch.equal(tl.mask, hf.mask)
    assert (tl.logits - hf.logits)[keep].abs().max() < 1e-4
    assert (hf.logits - clean.logits)[keep].abs().max() > 1e-2


@pytest.mark.parametrize("which", ["tiny_model", "tiny_gpt2", "tiny_gemma3"])
@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_last_only_logits_are_the_full_logits_at_each_last_token(
    which: str, backend: str, request: pytest.FixtureRequest
) -> None:
    """Next-token measures unembed one position a row (``logits_to_keep`` per row on the
    transformers model): the same numbers as the full logits at each text's last real token,
    steered, with right padding putting the last tokens at different places."""
    model: Model = request.getfixturevalue(which)
    if backend == "tl" and which == "tiny_gemma3":
        pytest.skip("TransformerLens has no Gemma 3")
    plan = SteeringPlan.of(_vec(model, 1, (model.d_model,)), 3.0)
    full = steered_logits(model, TEXTS, plan, backend=backend, batch_size=2)
    last = steered_logits(model, TEXTS, plan, backend=backend, batch_size=2, last_only=True)
    ends = full.mask.sum(1) - 1  # (n,)
    assert len(set(ends.tolist())) == 3  # three different last positions
    assert last.logits.shape == (len(TEXTS), 1, full.logits.shape[-1])
    expected = full.logits[torch.arange(len(TEXTS)), ends]  # (n, vocab)
    assert (last.logits[:, 0] - expected).abs().max() < 1e-4
    assert torch.equal(last.ids, full.ids) and torch.equal(last.mask, full.mask)


def test_batches_give_the_same_logits_as_one_batch(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vec(tiny_model, 2, (2, 64)), 2.0, position="back")
    whole = steered_logits(tiny_model, TEXTS, plan, batch_size=8)
    split = steered_logits(tiny_model, TEXTS, plan, batch_size=1)
    keep = whole.mask.bool()
    assert torch.equal(whole.mask, split.mask)
    assert (whole.logits - split.logits)[keep].abs().max() < 1e-5
    parts = list(iter_steered_logits(tiny_model, TEXTS, plan, batch_size=2))
    assert [p.ids.shape[0] for p in parts] == [2, 1]
    assert parts[1].ids.shape[1] == int(parts[1].mask.sum())  # padding trimmed per batch


def test_batched_coefficients_equal_separate_runs(tiny_model: Model) -> None:
    coeffs = [0.0, 1.5, -2.0, 4.0]
    for entry in (PlanEntry(_vec(tiny_model, 1, (3, 64)), 0.0), _vec(tiny_model, 2, (64,))):
        batched = coefficient_batch(tiny_model, entry, TEXTS, coeffs)
        assert batched.logits.shape[:2] == (4, 3)
        keep = batched.mask.bool()
        base = entry if isinstance(entry, PlanEntry) else PlanEntry(entry, 0.0)
        for i, c in enumerate(coeffs):
            alone = steered_logits(tiny_model, TEXTS, SteeringPlan([base.with_coeff(c)]))
            assert (batched.logits[i] - alone.logits)[keep].abs().max() < 1e-5
        assert (batched.logits[3] - batched.logits[0])[keep].abs().max() > 1e-2


def test_per_text_coefficients_and_bad_inputs(tiny_model: Model) -> None:
    v = _vec(tiny_model, 1, (64,))
    per_text = steered_logits(tiny_model, TEXTS, SteeringPlan.of(v, [0.0, 2.0, 0.0]))
    clean = steered_logits(tiny_model, TEXTS, None)
    assert torch.equal(per_text.logits[0], clean.logits[0])
    assert not torch.equal(per_text.logits[1], clean.logits[1])
    with pytest.raises(WorkbenchError, match="one coefficient per text"):
        steered_logits(tiny_model, TEXTS, SteeringPlan.of(v, [1.0, 2.0]))
    with pytest.raises(WorkbenchError, match="empty"):
        steered_logits(tiny_model, ["fine", "  "], None)
    ids, mask, _ = tiny_model.encode(TEXTS[:1])
    alone = steered_logits(tiny_model, (ids, mask)).logits  # (1, pos, vocab)
    assert (alone - clean.logits[:1]).abs().max() < 1e-5
