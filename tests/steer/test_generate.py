from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.hooks import Site, recording
from workbench.model.load import Model
from workbench.steer.apply import apply_plan
from workbench.steer.generate import (
    Generation,
    generate,
    generate_rows,
    generate_with_coefficients,
    side_by_side,
)
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD_SAMPLING, Sampling
from workbench.vectors.vector import SteeringVector

PROMPTS = ["Hello world, I love you", "The fox"]


def _vec(model: Model, layer: int, shape: tuple[int, ...], seed: int = 0) -> SteeringVector:
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return SteeringVector({layer: t}, model=model.name, d_model=model.d_model)


def _plans(model: Model) -> dict[str, SteeringPlan]:
    return {
        "front": SteeringPlan.of(_vec(model, 1, (3, 64)), 4.0),
        "all": SteeringPlan.of(_vec(model, 2, (64,)), 2.0),
    }


def _new(gen: Generation) -> list[list[int]]:
    return gen.tokens[:, gen.prompt_width :].tolist()


@pytest.mark.parametrize("backend", ["hf", "tl"])
@pytest.mark.parametrize("kind", ["front", "all"])
def test_cached_and_uncached_greedy_agree_under_steering(
    tiny_model: Model, backend: str, kind: str
) -> None:
    plan = _plans(tiny_model)[kind]
    kw: dict[str, Any] = {
        "sampling": Sampling(max_new_tokens=8, temperature=0.0, stop_at_eos=False)
    }
    kw["backend"] = backend
    cached = generate(tiny_model, PROMPTS, plan, use_cache=True, **kw)
    uncached = generate(tiny_model, PROMPTS, plan, use_cache=False, **kw)
    plain = generate(tiny_model, PROMPTS, None, **kw)
    assert _new(cached) == _new(uncached)
    assert _new(cached) != _new(plain)


@pytest.mark.parametrize("kind", ["front", "all"])
def test_transformer_lens_generate_with_and_without_cache(tiny_model: Model, kind: str) -> None:
    ids, _, _ = tiny_model.encode(PROMPTS[:1])
    out = {}
    for cache in (True, False):
        with apply_plan(tiny_model, _plans(tiny_model)[kind], backend="tl"):
            out[cache] = tiny_model.tl.generate(
                ids,
                max_new_tokens=8,
                do_sample=False,
                use_past_kv_cache=cache,
                verbose=False,
                stop_at_eos=False,
            )
    plain = tiny_model.tl.generate(ids, max_new_tokens=8, do_sample=False, verbose=False)
    assert torch.equal(out[True], out[False])
    assert not torch.equal(out[True], plain)


def test_generated_tokens_steered_only_when_asked(tiny_model: Model) -> None:
    # Record the steered layer's input on the last cached step: an "all" vector with
    # generated=False must leave it as it would be unsteered there.
    v = _vec(tiny_model, 2, (64,))
    site = Site("resid_pre", 2)
    last = {}
    for generated in (True, False):
        plan = SteeringPlan.of(v, 3.0, generated=generated)
        with apply_plan(tiny_model, plan, backend="tl"), recording(tiny_model, [site]) as rec:
            ids, _, _ = tiny_model.encode(PROMPTS[:1])
            with torch.inference_mode():
                tiny_model.tl(ids)  # the prompt
                tiny_model.tl(ids[:, -1:])  # one cached-style step: a generated position
            last[generated] = rec[site]
    with recording(tiny_model, [site]) as rec, torch.inference_mode():
        tiny_model.tl(ids[:, -1:])
    assert torch.allclose(last[True] - rec[site], 3.0 * v.directions[2], atol=1e-5)
    assert torch.equal(last[False], rec[site])


def test_left_padded_batch_matches_each_prompt_alone(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vec(tiny_model, 1, (2, 64)), 4.0, position="back")
    kw: dict[str, Any] = {
        "sampling": Sampling(max_new_tokens=6, temperature=0.0, stop_at_eos=False)
    }
    both = generate(tiny_model, PROMPTS, plan, **kw)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny_model, [prompt], plan, **kw)
        assert _new(alone)[0] == _new(both)[i]


def test_sampled_rows_do_not_depend_on_how_they_are_batched(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vec(tiny_model, 1, (64,)), [0.0, 1.0, 2.0, 3.0])
    kw: dict[str, Any] = {"n": 2, "sampling": Sampling(max_new_tokens=6, top_p=0.8, seed=5)}
    whole = generate(tiny_model, PROMPTS, plan, **kw)
    chunked = generate(tiny_model, PROMPTS, plan, batch_size=1, **kw)
    assert whole.texts == chunked.texts
    assert whole.sample_of_row == [0, 1, 0, 1] and whole.prompt_of_row == [0, 0, 1, 1]
    assert len(set(whole.texts)) > 1


def test_side_by_side_is_reproducible_and_steers(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vec(tiny_model, 1, (64,)), 8.0)
    one, two = (replace(ACTADD_SAMPLING, max_new_tokens=8, seed=s) for s in (1, 2))
    a = side_by_side(tiny_model, "I love", plan, n=3, sampling=one)
    b = side_by_side(tiny_model, "I love", plan, n=3, sampling=one)
    c = side_by_side(tiny_model, "I love", plan, n=3, sampling=two)
    assert set(a) >= {"prompt", "plan", "unsteered", "steered"}
    assert a["unsteered"] == b["unsteered"] and a["steered"] == b["steered"]
    assert a["unsteered"] != c["unsteered"]
    assert a["steered"] != a["unsteered"]
    assert len(a["steered"]) == 3 and all(not t.startswith("I love") for t in a["steered"])
    assert a["settings"]["top_p"] == 0.3 and a["settings"]["freq_penalty"] == 1.0
    plain = generate(
        tiny_model,
        "I love",
        None,
        n=3,
        sampling=Sampling(max_new_tokens=8, top_p=0.3, freq_penalty=1.0, seed=1),
    )
    assert plain.texts == a["unsteered"]


def test_coefficient_batch_equals_separate_generations(tiny_model: Model) -> None:
    entry = PlanEntry(_vec(tiny_model, 1, (64,)), 0.0)
    coeffs = [0.0, 2.0, 6.0]
    six = replace(ACTADD_SAMPLING, max_new_tokens=6)
    batched = generate_with_coefficients(tiny_model, "I love", entry, coeffs, n=2, sampling=six)
    for c, texts in zip(coeffs, batched, strict=True):
        alone = generate_with_coefficients(tiny_model, "I love", entry, [c], n=2, sampling=six)
        assert alone[0] == texts
    assert batched[0] != batched[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be"),
        ({"top_p": 0.0}, "top-p must be"),
        ({"max_new_tokens": 0}, "max new tokens"),
        ({"freq_penalty": float("nan")}, "frequency penalty"),
    ],
)
def test_bad_sampling_settings(tiny_model: Model, kwargs: dict, message: str) -> None:
    with pytest.raises(WorkbenchError, match=message):
        generate(tiny_model, "I love", None, sampling=Sampling(**kwargs))


def test_bad_generation_inputs(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vec(tiny_model, 1, (64,)), [1.0, 2.0, 3.0])
    with pytest.raises(WorkbenchError, match="prompt is empty"):
        generate(tiny_model, "   ", None)
    with pytest.raises(WorkbenchError, match="one coefficient per row"):
        generate(tiny_model, "I love", plan, n=2)
    with pytest.raises(WorkbenchError, match="exceeds the context"):
        generate(tiny_model, "I love", None, sampling=Sampling(max_new_tokens=500))


def _prompt_acts(model: Model, text: str, site: Site, width: int) -> torch.Tensor:
    ids, _, _ = model.encode([text])
    space = model.tokenizer(" ", add_special_tokens=False)["input_ids"]
    pad = torch.tensor([space * (width - ids.shape[1])], dtype=torch.long)
    assert model.hf is not None
    with recording(model, [site], backend="hf") as rec, torch.inference_mode():
        model.hf(input_ids=torch.cat([ids, pad], 1))  # padded with spaces, as ActAdd
    return rec[site][0]  # (pos, d_model)


@pytest.mark.real_model
def test_love_minus_hate_raises_sentiment_and_a_random_vector_does_not(
    default_model: Model,
) -> None:
    from workbench.measure.metrics import sentiment

    # Layer 2 of 30: at layers 4-8 the single token "Love" right after BOS carries a massive
    # activation (norm ~600 against ~95 for ordinary tokens) that swamps the Love-Hate
    # difference; at layer 2 the difference rows have norms ~110-190 against residual norms
    # ~70-100, so coefficient 4 is a strong but coherent push (checked over coefficients 1-8).
    # Measured: unsteered -0.04, Love-Hate +0.41, random -0.08 mean VADER; the 48 rows x 12
    # tokens take ~21 CPU-seconds, 40 s wall on the shared two-core machine.
    model, site, n, coeff = default_model, Site("resid_pre", 2), 16, 4.0
    width = max(model.encode([t])[0].shape[1] for t in ("Love", "Hate"))
    diff = _prompt_acts(model, "Love", site, width) - _prompt_acts(model, "Hate", site, width)
    noise = torch.randn(diff.shape, generator=torch.Generator().manual_seed(0))
    noise = noise / noise.norm(dim=-1, keepdim=True) * diff.norm(dim=-1, keepdim=True)
    love = SteeringVector({2: diff}, model.name, model.d_model)
    rand = SteeringVector({2: noise}, model.name, model.d_model)
    # One batch: n unsteered, n Love-Hate, n random rows; sample k shares its noise across them.
    zeros, ones = [0.0] * n, [coeff] * n
    plan = SteeringPlan(
        [PlanEntry(love, zeros + ones + zeros), PlanEntry(rand, zeros + zeros + ones)]
    )
    gen = generate_rows(
        model,
        ["I hate you because"],
        [0] * 3 * n,
        list(range(n)) * 3,
        plan,
        Sampling(max_new_tokens=12, top_p=0.3, freq_penalty=1.0, seed=0),
    )
    plain, steered, control = (sum(sentiment(gen.texts[i * n : (i + 1) * n])) / n for i in range(3))
    assert steered - plain > 0.25, (plain, steered, control)
    assert steered - control > 0.25, (plain, steered, control)
    assert abs(control - plain) < 0.2, (plain, steered, control)
