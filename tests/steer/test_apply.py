from __future__ import annotations

from typing import Any

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.hooks import Site, hf_layers, hooks_applied, recording
from workbench.model.load import Model
from workbench.steer.apply import apply_plan
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.vector import SteeringVector

PROMPTS = ["Hello world, I love you and the fox", "The fox", "I hate you"]


def _vec(
    model: Model, layer: int, shape: tuple[int, ...], seed: int = 0, **kw: Any
) -> SteeringVector:
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return SteeringVector({layer: t}, model=model.name, d_model=model.d_model, **kw)


def _logits(model: Model, backend: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if backend == "tl":
            return model.tl(ids, attention_mask=mask)
        assert model.hf is not None
        return model.hf(input_ids=ids, attention_mask=mask).logits


def _our_hooks(model: Model) -> int:
    assert model.hf is not None
    tl = sum(len(m._forward_hooks) for m in model.tl.modules())
    hf = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.hf.modules())
    return tl + hf


@pytest.mark.parametrize("backend", ["tl", "hf"])
@pytest.mark.parametrize("shape", [(3, 64), (64,)])
def test_coefficient_zero_leaves_logits_exactly_unchanged(
    tiny_model: Model, backend: str, shape: tuple[int, ...]
) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS)
    clean = _logits(tiny_model, backend, ids, mask)
    plan = SteeringPlan.of(_vec(tiny_model, 1, shape), 0.0)
    with apply_plan(tiny_model, plan, backend=backend, prompt_lengths=mask.sum(1)):
        assert torch.equal(_logits(tiny_model, backend, ids, mask), clean)
    with apply_plan(tiny_model, SteeringPlan.of(_vec(tiny_model, 1, shape), 3.0), backend=backend):
        assert (_logits(tiny_model, backend, ids, mask) - clean).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_layer_l_leaves_earlier_residuals_unchanged(tiny_model: Model, backend: str) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])
    sites = [Site("resid_pre", layer) for layer in range(4)]
    with recording(tiny_model, sites, backend=backend) as rec:
        clean_logits = _logits(tiny_model, backend, ids, mask)
    clean = dict(rec)
    plan = SteeringPlan.of(_vec(tiny_model, 2, (64,)), 4.0)
    with (
        apply_plan(tiny_model, plan, backend=backend),
        recording(tiny_model, sites, backend=backend) as rec,
    ):
        steered_logits = _logits(tiny_model, backend, ids, mask)
    for layer in (0, 1):
        assert torch.equal(rec[sites[layer]], clean[sites[layer]])
    assert (rec[sites[2]] - clean[sites[2]]).abs().max() > 1.0
    assert (steered_logits - clean_logits).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_hooks_removed_after_exception_user_hooks_kept(tiny_model: Model, backend: str) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])
    clean = _logits(tiny_model, backend, ids, mask)
    before = _our_hooks(tiny_model)
    seen: list[int] = []
    user = hf_layers(tiny_model.hf)[1].register_forward_pre_hook(lambda *a: seen.append(1))
    try:
        plan = SteeringPlan.of(_vec(tiny_model, 1, (64,)), 5.0)
        with (
            pytest.raises(RuntimeError, match="boom"),
            apply_plan(tiny_model, plan, backend=backend),
        ):
            assert _our_hooks(tiny_model) > before + 1
            raise RuntimeError("boom")
        assert _our_hooks(tiny_model) == before + 1  # only the user's hook is left
        assert torch.equal(_logits(tiny_model, backend, ids, mask), clean)
        _logits(tiny_model, "hf", ids, mask)
        assert seen, "the user's hook must survive"
    finally:
        user.remove()


def test_failure_halfway_through_registration_rolls_back(
    tiny_model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])
    clean = _logits(tiny_model, "hf", ids, mask)
    before = _our_hooks(tiny_model)
    ok = PlanEntry(_vec(tiny_model, 0, (64,)), 5.0)
    mid = PlanEntry(_vec(tiny_model, 1, (64,), site="mlp_out"), 5.0)

    def no_mlp(_layer: object) -> None:
        raise WorkbenchError("cannot find the MLP module")  # as on an unknown architecture

    monkeypatch.setattr("workbench.model.hooks._branch_ends", no_mlp)
    with (
        pytest.raises(WorkbenchError, match="cannot find the MLP"),
        apply_plan(tiny_model, SteeringPlan([ok, mid]), backend="hf"),
    ):
        pass
    assert _our_hooks(tiny_model) == before
    assert torch.equal(_logits(tiny_model, "hf", ids, mask), clean)


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_two_vector_plan_equals_hand_written_hooks(tiny_model: Model, backend: str) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])
    rows = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))  # (3, d_model)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(2))  # (d_model,)
    a = SteeringVector({1: rows}, tiny_model.name, 64)
    b = SteeringVector({3: direction}, tiny_model.name, 64)
    plan = SteeringPlan([PlanEntry(a, 2.5), PlanEntry(b, -1.5)])
    with apply_plan(tiny_model, plan, backend=backend):
        ours = _logits(tiny_model, backend, ids, mask)

    def front(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[:, :3] = y[:, :3] + 2.5 * rows
        return y

    hand = [(Site("resid_pre", 1), front), (Site("resid_pre", 3), lambda x: x + -1.5 * direction)]
    with hooks_applied(tiny_model, hand, backend=backend):
        expected = _logits(tiny_model, backend, ids, mask)
    assert torch.equal(ours, expected)


def _site_delta(
    model: Model, plan: SteeringPlan, ids: torch.Tensor, mask: torch.Tensor, **layout: Any
) -> torch.Tensor:
    site = Site("resid_pre", 2)
    with recording(model, [site], backend="tl") as rec:
        _logits(model, "tl", ids, mask)
    clean = rec[site]
    with apply_plan(model, plan, backend="tl", **layout), recording(model, [site]) as rec:
        _logits(model, "tl", ids, mask)
    return rec[site] - clean  # (batch, pos, d_model)


@pytest.mark.parametrize("position", ["front", "middle", "back"])
def test_windows_hit_the_right_positions_with_left_padding(
    tiny_model: Model, position: str
) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS, padding_side="left")
    lengths = mask.sum(1)
    width = ids.shape[1]
    rows = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    plan = SteeringPlan.of(SteeringVector({2: rows}, tiny_model.name, 64), 3.0, position=position)
    delta = _site_delta(tiny_model, plan, ids, mask, pad_offsets=width - lengths)
    for i, length in enumerate(lengths.tolist()):
        start = {"front": 0, "middle": (length - 2) // 2, "back": length - 2}[position]
        cols = [width - length + start + j for j in range(2)]
        changed = delta[i].abs().amax(-1).nonzero().flatten().tolist()
        assert changed == cols, (i, length)
        assert torch.allclose(delta[i, cols], 3.0 * rows, atol=1e-5)


def test_all_positions_skip_padding_and_short_prompts_clip(tiny_model: Model) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS, padding_side="left")
    lengths = mask.sum(1)
    pads = ids.shape[1] - lengths
    plan = SteeringPlan.of(_vec(tiny_model, 2, (64,)), 2.0)
    changed = _site_delta(tiny_model, plan, ids, mask, pad_offsets=pads).abs().amax(-1) > 0
    assert torch.equal(changed, mask.bool())
    ids, mask, _ = tiny_model.encode(["I"])  # BOS + one token
    long = SteeringPlan.of(_vec(tiny_model, 2, (5, 64)), 2.0, position="back")
    with apply_plan(tiny_model, long, backend="tl") as run:
        _logits(tiny_model, "tl", ids, mask)
    assert len(run.notes) == 1 and "has 5 positions but the prompt has 2 tokens" in run.notes[0]


def test_head_vectors_add_to_chosen_heads_only(tiny_model: Model) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])
    shift = torch.zeros(4, 16)
    shift[2] = torch.randn(16, generator=torch.Generator().manual_seed(4))
    v = SteeringVector({1: shift}, tiny_model.name, 64, site="z")
    site = Site("z", 1)
    with recording(tiny_model, [site], backend="hf") as rec:
        _logits(tiny_model, "hf", ids, mask)
    clean = rec[site]
    with (
        apply_plan(tiny_model, SteeringPlan.of(v, 2.0)),
        recording(tiny_model, [site], backend="hf") as rec,
    ):
        _logits(tiny_model, "hf", ids, mask)
    delta = rec[site] - clean  # (batch, pos, n_heads, d_head)
    assert torch.allclose(delta[0, :, 2], (2.0 * shift[2]).expand(ids.shape[1], 16), atol=1e-6)
    assert torch.equal(delta[..., [0, 1, 3], :], torch.zeros_like(delta[..., [0, 1, 3], :]))


def test_batch_size_mismatch_is_a_clear_error(tiny_model: Model) -> None:
    ids, mask, _ = tiny_model.encode(PROMPTS)
    plan = SteeringPlan.of(_vec(tiny_model, 1, (64,)), [1.0, 2.0])
    with (
        pytest.raises(WorkbenchError, match="plan has 2 batch rows"),
        apply_plan(tiny_model, plan, backend="hf"),
    ):
        _logits(tiny_model, "hf", ids, mask)
    with (
        pytest.raises(WorkbenchError, match="batch has 3 rows"),
        apply_plan(tiny_model, plan, prompt_lengths=mask.sum(1)),
    ):
        pass
