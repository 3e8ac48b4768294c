"""Numeric safety of steering (workbench.steer.safety): coefficients the dtype cannot hold are
refused, ones over 100x the residual norm are warned about, NaN/inf is never decoded as text."""

from __future__ import annotations

import logging

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.hooks import Site, hooks_applied
from workbench.model.load import Model
from workbench.steer import safety
from workbench.steer.forward import steered_logits
from workbench.steer.generate import generate, side_by_side
from workbench.steer.plan import SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.vectors.vector import SteeringVector

GREEDY = Sampling(max_new_tokens=3, temperature=0)


def _vector(model: Model, layer: int = 2, norms: dict[int, float] | None = None) -> SteeringVector:
    t = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    return SteeringVector({layer: t / t.norm()}, model.name, model.d_model, layer_norms=norms or {})


@pytest.mark.parametrize("coeff", [1e20, 1e30, -1e38, 3e38])
@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_a_coefficient_the_dtype_cannot_hold_is_refused(
    tiny_model: Model, coeff: float, backend: str
) -> None:
    plan = SteeringPlan.of(_vector(tiny_model), coeff)
    with pytest.raises(WorkbenchError, match=r"cannot hold.*use a coefficient below") as e:
        generate(tiny_model, "I love", plan, sampling=GREEDY, backend=backend)
    assert "\n" not in str(e.value)
    with pytest.raises(WorkbenchError, match="cannot hold"):
        steered_logits(tiny_model, ["I love you"], plan, backend=backend)


def test_refusal_names_the_largest_coefficient_of_a_list(tiny_model: Model) -> None:
    plan = SteeringPlan.of(_vector(tiny_model), [0.0, 1.0, 1e25])
    with pytest.raises(WorkbenchError, match="coefficient 1e\\+25"):
        steered_logits(tiny_model, ["a", "b", "c"], plan)


def test_norm_units_are_checked_after_conversion(tiny_model: Model) -> None:
    vector = _vector(tiny_model, norms={2: 1e10})
    plan = SteeringPlan.of(vector, 1e12, units="norm")  # raw 1e22: over the float32 limit
    with pytest.raises(WorkbenchError, match="coefficient 1e\\+12 .*cannot hold"):
        steered_logits(tiny_model, ["I love you"], plan)


@pytest.mark.parametrize("coeff", [0.0, 1.0, -50.0])
def test_ordinary_coefficients_pass_without_notes(tiny_model: Model, coeff: float) -> None:
    plan = SteeringPlan.of(_vector(tiny_model, norms={2: 8.0}), coeff)
    result = side_by_side(tiny_model, "I love", plan, n=2, sampling=GREEDY)
    assert not any("residual norm" in n for n in result["notes"])


@pytest.mark.parametrize("recorded", [True, False])
def test_over_100x_the_residual_norm_warns_and_is_noted(
    tiny_model: Model,
    recorded: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(safety, "_WARNED", set())  # the log warns once per process
    vector = _vector(tiny_model, norms={2: 8.0} if recorded else None)
    plan = SteeringPlan.of(vector, 1e6)
    with caplog.at_level(logging.WARNING, logger="workbench.steer.safety"):
        result = side_by_side(tiny_model, "I love", plan, n=2, sampling=GREEDY)
    notes = [n for n in result["notes"] if "median residual norm" in n]
    assert len(notes) == 1 and "coefficient 1e+06" in notes[0] and "x the median" in notes[0]
    if recorded:
        assert "125000x" in notes[0]  # 1e6 / 8
    assert [r.getMessage() for r in caplog.records] == [f"warning: {notes[0]}"]


def test_residual_ratio_threshold() -> None:
    assert safety.residual_ratio_note(99.0, 1.0, 99.0, "here") is None
    assert safety.residual_ratio_note(1e5, 0.0, 1.0, "here") is None  # unknown residual
    note = safety.residual_ratio_note(101.0, 1.0, 101.0, "here")
    assert note is not None and "101x" in note


def _poison(act: torch.Tensor) -> torch.Tensor:
    return act * float("nan")


@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_nan_activations_stop_a_steered_run(tiny_model: Model, backend: str) -> None:
    plan = SteeringPlan.of(_vector(tiny_model), 1.0)
    with hooks_applied(tiny_model, [(Site("resid_pre", 1), _poison)], backend=backend):
        with pytest.raises(WorkbenchError, match="steered activations .* NaN or inf"):
            generate(tiny_model, "I love", plan, sampling=GREEDY, backend=backend)
        with pytest.raises(WorkbenchError, match="NaN or inf"):
            steered_logits(tiny_model, ["I love you"], plan, backend=backend)


@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_nan_logits_are_never_decoded(tiny_model: Model, backend: str) -> None:
    # Poisoned after the last steered layer: the logits check catches it.
    with hooks_applied(tiny_model, [(Site("resid_post", 3), _poison)], backend=backend):
        with pytest.raises(WorkbenchError, match="next-token logits hold NaN or inf"):
            generate(tiny_model, "I love", None, sampling=GREEDY, backend=backend)
        with pytest.raises(WorkbenchError, match="logits hold NaN or inf"):
            steered_logits(tiny_model, ["I love you"], None, backend=backend)
