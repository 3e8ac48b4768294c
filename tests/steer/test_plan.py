from __future__ import annotations

from typing import Any

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.vector import SteeringVector


def _vec(model: Model, layers: dict[int, tuple[int, ...]], **kw: Any) -> SteeringVector:
    g = torch.Generator().manual_seed(0)
    dirs = {layer: torch.randn(*shape, generator=g) for layer, shape in layers.items()}
    return SteeringVector(dirs, model=model.name, d_model=model.d_model, **kw)


def test_defaults_follow_the_vector_kind(tiny_model: Model) -> None:
    aligned = PlanEntry(_vec(tiny_model, {1: (3, 64)}), 2.0)
    assert (aligned.position, aligned.generated, aligned.layers) == ("front", False, [1])
    direction = PlanEntry(_vec(tiny_model, {2: (64,)}), 2.0)
    assert (direction.position, direction.generated) == ("all", True)
    mean_row = PlanEntry(_vec(tiny_model, {1: (3, 64)}), 2.0, position="all")
    assert mean_row.generated is False


def test_norm_units_scale_to_the_recorded_residual_norm(tiny_model: Model) -> None:
    v = _vec(tiny_model, {1: (64,)}, layer_norms={1: 10.0, 3: 20.0})
    e = PlanEntry(v, 0.5, units="norm")
    assert e.raw_coeffs(1)[0] * v.norm(1) == pytest.approx(5.0)
    moved = PlanEntry(v, [0.5, 1.0], layers=[3], units="norm")
    assert [c * v.norm(1) for c in moved.raw_coeffs(3)] == pytest.approx([10.0, 20.0])
    with pytest.raises(WorkbenchError, match="no residual norm recorded for layer 2"):
        PlanEntry(v, 1.0, layers=[2], units="norm")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coeff": float("nan")}, "not a finite number"),
        ({"coeff": [1.0, float("inf")]}, "not a finite number"),
        ({"coeff": []}, "coefficient list is empty"),
        ({"coeff": "big"}, "is not a number"),
        ({"position": "start"}, "unknown position 'start'"),
        ({"units": "sigma"}, "unknown coefficient units"),
        ({"position": "front", "generated": True}, "use position 'all'"),
        ({"layers": [1, 1]}, "repeat a layer"),
        ({"layers": []}, "layer list is empty"),
    ],
)
def test_bad_entries_are_refused(tiny_model: Model, kwargs: dict, message: str) -> None:
    args = {"coeff": 1.0, **kwargs}
    with pytest.raises(WorkbenchError, match=message):
        PlanEntry(_vec(tiny_model, {1: (64,)}), **args)


def test_multi_layer_vector_only_at_its_own_layers(tiny_model: Model) -> None:
    v = _vec(tiny_model, {1: (64,), 2: (64,)})
    assert PlanEntry(v, 1.0, layers=[2]).layers == [2]
    with pytest.raises(WorkbenchError, match=r"vector has no layer \[3\]"):
        PlanEntry(v, 1.0, layers=[3])


def test_model_checks_name_width_layer_and_heads(tiny_model: Model, tiny_gpt2: Model) -> None:
    v = _vec(tiny_model, {1: (64,)})
    PlanEntry(v, 1.0).check(tiny_model)
    with pytest.raises(WorkbenchError, match="but the model is"):
        PlanEntry(v, 1.0).check(tiny_gpt2)
    with pytest.raises(WorkbenchError, match="valid layers are 0..3"):
        PlanEntry(v, 1.0, layers=[4]).check(tiny_model)
    heads = SteeringVector({1: torch.zeros(2, 16)}, tiny_model.name, 64, site="z")
    with pytest.raises(WorkbenchError, match="has 4 heads of size 16"):
        PlanEntry(heads, 1.0).check(tiny_model)


def test_plan_rows_must_agree_and_select(tiny_model: Model) -> None:
    v = _vec(tiny_model, {1: (64,)})
    with pytest.raises(WorkbenchError, match="different lengths"):
        SteeringPlan([PlanEntry(v, [1.0, 2.0]), PlanEntry(v, [1.0, 2.0, 3.0])])
    with pytest.raises(WorkbenchError, match="at least one vector"):
        SteeringPlan([])
    plan = SteeringPlan([PlanEntry(v, [1.0, 2.0, 3.0]), PlanEntry(v, 5.0)])
    assert plan.rows == 3
    sub = plan.select_rows([2, 0])
    assert sub.entries[0].coeff == [3.0, 1.0] and sub.entries[1].coeff == 5.0
    assert plan.expand_rows(2).entries[0].coeff == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_to_json_records_what_is_needed_to_rerun(tiny_model: Model) -> None:
    v = _vec(tiny_model, {1: (3, 64)})
    out = SteeringPlan.of(v, 4.0, position="back", label="love.safetensors").to_json()
    assert out == [
        {
            "label": "love.safetensors",
            "vector": v.describe(),
            "coeff": 4.0,
            "units": "raw",
            "raw_coeff": {"1": 4.0},
            "layers": [1],
            "site": "resid_pre",
            "position": "back",
            "generated": False,
        }
    ]
