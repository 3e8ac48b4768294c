"""Composition: retention and interference (synthetic additive model), cosines, tiny-model runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.experiments.compose import ComposeItem, _comparable, cosines, run_compose, summarize
from workbench.experiments.composition_math import additive_model_effects
from workbench.measure.effects import MeasureSpec, target_set
from workbench.measure.stats import Estimate
from workbench.model.load import Model
from workbench.vectors.build import from_prompts
from workbench.vectors.vector import SteeringVector

PROMPTS = ["I went up to my friend and said", "I hate you because"]


def _exact(values: torch.Tensor) -> list[Estimate]:
    return [Estimate(float(v), float(v), float(v), 1) for v in values]


def test_summarize_on_a_synthetic_additive_model() -> None:
    # Vector 0 and 1 are orthogonal to each other's readouts; vector 2 cancels vector 0.
    vectors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    readouts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    fx = additive_model_effects(vectors, readouts)
    pairs = [_exact(row) for row in fx.pairs]
    out = summarize(_exact(fx.alone), _exact(fx.combined), pairs)
    inter = out["interference"]
    assert inter[0][1] == pytest.approx(0.0) and inter[1][0] == pytest.approx(0.0)
    assert inter[0][2] == pytest.approx(1.0) and inter[2][0] == pytest.approx(1.0)
    # All three together: 0 and 2 cancel each other (retention 0), 1 keeps all of its effect.
    assert out["retention"] == pytest.approx([0.0, 1.0, 0.0])
    assert out["alone_significant"] == [True, True, True]
    assert out["effects"]["alone"][1]["value"] == pytest.approx(2.0)


def test_cosines_only_where_layers_match() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    pa, pb = _comparable(a, b)
    assert pa.shape == pb.shape == (3, 2)
    vecs = [
        SteeringVector({3: a}, "m", 2),
        SteeringVector({3: b}, "m", 2),
        SteeringVector({5: torch.tensor([1.0, 0.0])}, "m", 2),
    ]
    cos = cosines(vecs, [3, 3, 5])
    assert cos[0][1] == pytest.approx(1.0 / 11**0.5)  # front-aligned, zero-padded
    assert cos[0][2] is None and cos[2][2] == 1.0


def _items(model: Model, coeff_b: float, layer_b: int = 2) -> list[ComposeItem]:
    wed = from_prompts(model, " wedding", " ", [1])
    love = from_prompts(model, "Love", "Hate", [1])
    return [
        ComposeItem(wed, 4.0, 1, "wedding", target_set(model, ["wedding"], "w")),
        ComposeItem(love, coeff_b, layer_b, "love", target_set(model, ["love"], "l")),
    ]


def _spec(items: list[ComposeItem]) -> MeasureSpec:
    return MeasureSpec(
        prompts=PROMPTS,
        targets=[it.targets for it in items if it.targets is not None],
        off_target=["The bus runs every fifteen minutes."],
        neutral=PROMPTS,
    )


def test_retention_is_one_when_the_other_vector_is_off(tiny_model: Model) -> None:
    items = _items(tiny_model, 0.0)
    data = run_compose(tiny_model, items, _spec(items))
    assert data["retention"][0] == 1.0
    assert data["effects"]["alone"][1]["value"] == 0.0  # B at coefficient 0 does nothing
    assert data["retention_unreliable"][1] is True
    assert data["cosine"][0][1] is None  # layers 1 and 2


def test_compose_on_a_shared_layer(tiny_model: Model) -> None:
    items = _items(tiny_model, 6.0, layer_b=1)
    data = run_compose(tiny_model, items, _spec(items))
    assert [v["layer"] for v in data["vectors"]] == [1, 1]
    assert -1.0 <= data["cosine"][0][1] <= 1.0 and data["cosine"][0][1] != 0.0
    assert len(data["interference"]) == 2 and data["interference"][0][0] == 0.0
    alone = data["effects"]["alone"][0]["value"]
    assert data["effects"]["pairs"][0][0]["value"] == alone
    expected = 1 - data["effects"]["pairs"][0][1]["value"] / alone
    assert data["interference"][0][1] == pytest.approx(expected)
    assert {"combined", "alone"} <= set(data["damage"]) and len(data["damage"]["alone"]) == 2
    ortho = run_compose(tiny_model, items, _spec(items), orthogonalize=True)
    assert abs(ortho["cosine"][0][1]) < 1e-5
    assert ortho["orthogonalized"] is True


def test_compose_needs_a_metric_per_vector(tiny_model: Model) -> None:
    items = _items(tiny_model, 1.0)
    items[1].targets = None
    with pytest.raises(WorkbenchError, match="has no metric"):
        run_compose(tiny_model, items, _spec(items))
    with pytest.raises(WorkbenchError, match="at least two"):
        run_compose(tiny_model, items[:1], _spec(items))


def test_run_compose_leaves_the_callers_items_unchanged(tiny_model: Model) -> None:
    items = _items(tiny_model, 6.0, layer_b=1)
    items = [dataclasses.replace(it, label="") for it in items]
    before = [dataclasses.replace(it) for it in items]
    directions = [{k: t.clone() for k, t in it.vector.directions.items()} for it in items]
    data = run_compose(tiny_model, items, _spec(items), orthogonalize=True)
    assert [v["label"] for v in data["vectors"]] == ["v1", "v2"]
    assert [it.label for it in items] == ["", ""]
    assert items == before  # every field, not only the label
    for it, saved in zip(items, directions, strict=True):
        assert it.vector.directions.keys() == saved.keys()
        assert all(torch.equal(it.vector.directions[k], saved[k]) for k in saved)
