"""Effect and side-effect measurement on the tiny model (known answers) and the real one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.measure.effects import (
    Condition,
    EffectSpec,
    MeasureSpec,
    actadd_sampling,
    default_effect,
    front_pad,
    kl_top_tokens,
    last_token_logits,
    measure,
    measure_vector,
    parse_words,
    sentence_perplexities,
    target_set,
    vector_at_layer,
)
from workbench.measure.metrics import next_token_kl, sequence_perplexity
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.plan import PlanEntry
from workbench.vectors.build import from_prompts
from workbench.vectors.vector import SteeringVector

SENTENCES = [
    "The bride walked down the aisle.",
    "The bus runs every fifteen minutes.",
    "I need to buy milk and bread.",
]
PROMPTS = ["I went up to my friend and said", "The weather today is"]


def _direction(model: Model, layer: int = 1, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        directions={layer: torch.randn(model.d_model, generator=g)},
        model=model.name,
        d_model=model.d_model,
        method="custom",
        layer_norms={layer: 1.0},
    )


@pytest.fixture(scope="module")
def wedding(tiny_model: Model) -> SteeringVector:
    return from_prompts(tiny_model, " wedding", " ", [1])


def _spec(**kw: object) -> MeasureSpec:
    base: dict[str, object] = {
        "prompts": PROMPTS,
        "off_target": SENTENCES,
        "on_target": SENTENCES[:2],
        "neutral": PROMPTS,
        "n": 2,
        "sampling": actadd_sampling(5),
    }
    base.update(kw)
    return MeasureSpec(**base)  # type: ignore[arg-type]


def test_coefficient_zero_is_exactly_unsteered(tiny_model: Model, wedding: SteeringVector) -> None:
    spec = _spec(targets=[target_set(tiny_model, ["wedding", "bride"])], sentiment=True)
    conds = [Condition("0", (0.0,)), Condition("8", (8.0,))]
    (zero, eight), base = measure(tiny_model, [PlanEntry(wedding, 0.0)], conds, spec)
    for key in ("off_target_ratio", "on_target_ratio"):
        assert np.array_equal(zero.rows[key], np.ones(len(zero.rows[key])))
    assert np.array_equal(zero.rows["kl"], np.zeros(len(PROMPTS)))
    assert np.array_equal(zero.rows["target_logprob_shift:target"], np.zeros(len(PROMPTS)))
    assert all(float(np.abs(d).max()) == 0.0 for d in zero.deltas.values())
    assert zero.completions == base.completions
    # Steering at 8 changes the numbers (the ratio could not be 1 everywhere by accident).
    assert not np.allclose(eight.rows["off_target_ratio"], 1.0)
    assert float(eight.rows["kl"].min()) > 0
    assert len(eight.rows["distinct2"]) == len(PROMPTS) * 2
    est = eight.estimate("kl")
    assert est.low <= est.value <= est.high and est.n == len(PROMPTS)


def test_sentence_perplexity_matches_plain_scoring(tiny_model: Model) -> None:
    # A single direction (position all) adds no prefix, so coefficient 0 must equal scoring
    # the sentences unsteered with the metrics function.
    entry = PlanEntry(_direction(tiny_model), 0.0)
    assert front_pad([entry]) == 0
    ppl = sentence_perplexities(tiny_model, [entry], [Condition("0", (0.0,))], SENTENCES)
    logits, ids, mask = steered_logits(tiny_model, SENTENCES, None)
    expected = sequence_perplexity(logits, ids, mask).numpy()
    np.testing.assert_allclose(ppl[0], expected, rtol=1e-5)


def test_batched_conditions_equal_separate_runs(tiny_model: Model, wedding: SteeringVector) -> None:
    entry = PlanEntry(wedding, 0.0)
    assert front_pad([entry]) == wedding.directions[1].shape[0] - 1
    conds = [Condition("0", (0.0,)), Condition("3", (3.0,)), Condition("-2", (-2.0,))]
    together = sentence_perplexities(tiny_model, [entry], conds, SENTENCES, batch_size=4)
    for i, c in enumerate(conds):
        alone = sentence_perplexities(tiny_model, [entry], [c], SENTENCES)
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5)
    assert not np.allclose(together[1], together[0])


def test_injection_puts_the_prompt_in_front(tiny_model: Model, wedding: SteeringVector) -> None:
    conds = [Condition("inject", (0.0,), inject=" wedding")]
    got = last_token_logits(tiny_model, [PlanEntry(wedding, 0.0)], conds, PROMPTS)[0]
    for i, p in enumerate(PROMPTS):
        ids = tiny_model.tokenizer(" wedding" + p, add_special_tokens=False)["input_ids"]
        # Token-level concatenation: the prompt's own tokens follow the injected ones.
        body = tiny_model.tokenizer(p, add_special_tokens=False)["input_ids"]
        inj = tiny_model.tokenizer(" wedding", add_special_tokens=False)["input_ids"]
        row = torch.tensor([[tiny_model.bos_token_id, *inj, *body]])
        logits = steered_logits(tiny_model, row, None).logits[0, -1]
        torch.testing.assert_close(got[i], logits, rtol=1e-4, atol=1e-4)
        assert len(ids) > 0


def test_kl_contributors_sum_to_kl(tiny_model: Model) -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, tiny_model.tl.cfg.d_vocab, generator=g)
    q = p + 0.5 * torch.randn(p.shape, generator=g)
    everything = kl_top_tokens(tiny_model, p, q, k=p.shape[1])
    total = sum(t["contribution"] for t in everything)
    assert total == pytest.approx(float(next_token_kl(p, q).mean()), abs=1e-9)
    top = kl_top_tokens(tiny_model, p, q, k=3)
    assert [t["id"] for t in top] == [t["id"] for t in everything[:3]]
    assert top[0]["contribution"] >= top[1]["contribution"] >= top[2]["contribution"]


def test_measure_vector_has_controls(tiny_model: Model, wedding: SteeringVector) -> None:
    spec = _spec(targets=[target_set(tiny_model, ["wedding"])])
    out = measure_vector(tiny_model, wedding, 4.0, spec, default_effect(spec))
    assert out["kind"] == "measure"
    assert {"unsteered", "steered", "random", "injection"} <= set(out)
    assert out["injection"]["text"] == " wedding"
    assert out["unsteered"]["damage"]["value"] == 1.0
    assert out["steered"]["measures"]["kl"]["value"] > 0
    plain = measure_vector(tiny_model, _direction(tiny_model), 4.0, spec, default_effect(spec))
    assert "injection" not in plain


def test_vector_at_layer_rebuilds_or_moves(tiny_model: Model, wedding: SteeringVector) -> None:
    rebuilt, note = vector_at_layer(tiny_model, wedding, 2)
    assert note is None
    torch.testing.assert_close(
        rebuilt.directions[2], from_prompts(tiny_model, " wedding", " ", [2]).directions[2]
    )
    feature = SteeringVector(
        directions={1: torch.ones(tiny_model.d_model)},
        model=tiny_model.name,
        d_model=tiny_model.d_model,
        method="sae_feature",
    )
    moved, note = vector_at_layer(tiny_model, feature, 3)
    assert note is not None and "unchanged" in note
    assert moved.layers == [3] and 3 in moved.layer_norms
    torch.testing.assert_close(moved.directions[3], feature.directions[1])


def test_bad_effect_inputs(tiny_model: Model) -> None:
    with pytest.raises(WorkbenchError, match="empty"):
        parse_words(" , ,")
    nothing = SimpleNamespace(name="stub", tokenizer=lambda *a, **k: {"input_ids": []})
    with pytest.raises(WorkbenchError, match="tokenizes to nothing"):
        target_set(nothing, ["wedding"])  # type: ignore[arg-type]
    with pytest.raises(WorkbenchError, match="no effect measure"):
        default_effect(MeasureSpec(neutral=PROMPTS))
    with pytest.raises(WorkbenchError, match="not measured"):
        default_effect(_spec(n=0), "sentiment")
    with pytest.raises(WorkbenchError, match="unknown effect"):
        EffectSpec("perplexity")
    assert default_effect(_spec(), None).kind == "on_target"
    assert default_effect(_spec(), None).direction == -1


@pytest.mark.real_model
def test_wedding_vector_lowers_wedding_perplexity_more(default_model: Model) -> None:
    """ActAdd's wedding experiment: steering helps wedding sentences more than unrelated ones."""
    from workbench.corpora import load_corpus

    vec = from_prompts(default_model, " wedding", " ", [6])
    conds = [Condition("0", (0.0,)), Condition("4", (4.0,))]
    entry = PlanEntry(vec, 0.0)
    wed = sentence_perplexities(
        default_model, [entry], conds, load_corpus("builtin:wedding", limit=8)
    )
    other = sentence_perplexities(
        default_model, [entry], conds, load_corpus("builtin:unrelated", limit=8)
    )
    wed_ratio = float(np.mean(wed[1] / wed[0]))
    other_ratio = float(np.mean(other[1] / other[0]))
    assert wed_ratio < 1.0
    assert wed_ratio < other_ratio - 0.02
