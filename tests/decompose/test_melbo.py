"""MELBO and the Jacobian: a planted trigger is recovered, batching changes nothing, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.cli import main
from workbench.decompose.jacobian import train_jacobian
from workbench.decompose.learned import (
    DEFAULT_MEASURE,
    DEFAULT_RADIUS,
    displacement_vs_random,
    initial_directions,
)
from workbench.decompose.melbo import train_melbo
from workbench.decompose.trials import TrialSettings
from workbench.decompose.unsupervised import discover_learned
from workbench.errors import WorkbenchError
from workbench.model.load import Model, load_model
from workbench.testing import make_tiny_model
from workbench.vectors.vector import SteeringVector

SOURCE, TARGET = 1, 3
FAST: dict[str, Any] = {"source": SOURCE, "target": TARGET, "n_prompts": 6}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, torch.Tensor]:
    """A tiny Llama whose block 1 attention carries a rank-1 amplifier: the value of kv head 0,
    coordinate 0, reads direction ``u`` 5x harder and is written out along ``w`` 5x louder, so a
    push along ``u`` at resid_pre 1 moves resid_pre 3 far more than any other direction."""
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny-trigger"), arch="llama")
    model = load_model(str(folder))
    g = torch.Generator().manual_seed(7)
    u, w = torch.randn(2, model.d_model, generator=g)  # (d_model,) each
    u, w = u / u.norm(), w / w.norm()
    hf: Any = model.hf
    attn = hf.model.layers[SOURCE].self_attn
    d_head = model.d_head
    with torch.no_grad():
        attn.v_proj.weight[0] += 5 * u
        # kv head 0 serves query heads 0 and 1 (grouped-query attention).
        attn.o_proj.weight[:, 0] += 5 * w
        attn.o_proj.weight[:, d_head] += 5 * w
    return model, u


@pytest.mark.parametrize(("measure", "radius"), [("raw", 1.0), ("direction", DEFAULT_RADIUS)])
def test_melbo_recovers_the_planted_trigger(
    planted: tuple[Model, torch.Tensor], measure: str, radius: float
) -> None:
    model, u = planted
    found = train_melbo(model, k=2, iterations=30, measure=measure, radius=radius, **FAST)
    assert abs(float(found.directions[0] @ u)) > 0.9
    assert found.objective[0] > 10 * found.objective[1]
    gram = found.directions @ found.directions.T  # (k, k)
    assert torch.allclose(gram, torch.eye(2), atol=1e-5)


@pytest.mark.parametrize("measure", ["raw", "direction"])
def test_jacobian_recovers_the_planted_trigger(
    planted: tuple[Model, torch.Tensor], measure: str
) -> None:
    model, u = planted
    found = train_jacobian(model, k=2, iterations=8, measure=measure, **FAST)
    assert abs(float(found.directions[0] @ u)) > 0.9
    assert found.objective[0] > found.objective[1]


def test_displacement_against_random_has_an_interval_above_one(
    planted: tuple[Model, torch.Tensor],
) -> None:
    """The planted trigger moves layer 3 far more than random directions of the same norm; an
    untrained random direction, reported the same way, does not."""
    model, _ = planted
    found = train_melbo(model, k=1, iterations=30, **FAST)
    moved = displacement_vs_random(model, found)
    lo, hi = moved["ratio_ci"]
    assert 3 < lo <= moved["ratio"] <= hi
    assert moved["n_random"] == 16 and moved["n_prompts"] == 6
    untrained = dataclasses.replace(found, directions=initial_directions(1, model.d_model, 99))
    lo, hi = displacement_vs_random(model, untrained)["ratio_ci"]
    assert lo < 1.5 and hi > 0.5


def test_batched_equals_one_at_a_time(planted: tuple[Model, torch.Tensor]) -> None:
    model, _ = planted
    # Without the constraint every vector trains independently: batching must change nothing.
    free: dict[str, Any] = {"k": 3, "iterations": 4, "orthogonal": False, **FAST}
    batched = train_melbo(model, batched=True, **free)
    alone = train_melbo(model, batched=False, **free)
    assert torch.allclose(batched.directions, alone.directions, atol=1e-4)
    assert batched.objective == pytest.approx(alone.objective, rel=1e-4)
    # With it, the first vector is unconstrained either way, so it is the same too.
    ortho: dict[str, Any] = {"k": 3, "iterations": 4, **FAST}
    b, a = train_melbo(model, **ortho), train_melbo(model, batched=False, **ortho)
    assert torch.allclose(b.directions[0], a.directions[0], atol=1e-4)


def test_weights_stay_frozen_and_untouched(planted: tuple[Model, torch.Tensor]) -> None:
    model, _ = planted
    hf: Any = model.hf
    params = list(hf.parameters())
    before = [p.detach().clone() for p in params[:4]]
    flags = [p.requires_grad for p in params]
    train_melbo(model, k=1, iterations=2, **FAST)
    assert [p.requires_grad for p in params] == flags
    assert all(p.grad is None for p in params)
    assert all(torch.equal(a, p) for a, p in zip(before, params[:4], strict=False))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": 3, "target": 3}, "must come before"),
        ({"source": 1, "target": 3, "radius": 0.0}, "radius R must be positive"),
        ({"source": 1, "target": 3, "k": 65}, "do not fit in d_model"),
        ({"source": 1, "target": 3, "prompts": ["  "]}, "no documents|empty"),
    ],
)
def test_bad_input_is_one_line_error(
    tiny_model: Model, kwargs: dict[str, object], message: str
) -> None:
    for train in (train_melbo, train_jacobian):
        with pytest.raises(WorkbenchError, match=message):
            train(tiny_model, **kwargs)  # type: ignore[arg-type]


def test_discover_learned_saves_candidates_with_their_recipe(
    tiny_model: Model, tmp_path: Path
) -> None:
    learned = train_melbo(tiny_model, k=2, iterations=2, seed=3, **FAST)
    settings = TrialSettings(
        n_prompts=2, n_damage=2, max_new_tokens=3, n_completion_prompts=1, n_random=2
    )
    result = discover_learned(tiny_model, learned, settings=settings)
    assert len(result.candidates) == 4 and result.method == "melbo"
    assert all(c.between_doc_share is None and c.docs == [] for c in result.candidates)
    result.save(tmp_path)
    vec = SteeringVector.load(tmp_path / "candidates" / "c000pos.safetensors")
    assert vec.method == "melbo" and vec.layers == [SOURCE]
    assert vec.recipe["source_layer"] == SOURCE and vec.recipe["target_layer"] == TARGET
    assert vec.recipe["seed"] == 3 and vec.recipe["radius"] == DEFAULT_RADIUS
    assert vec.recipe["measure"] == DEFAULT_MEASURE == "direction"
    assert torch.allclose(vec.directions[SOURCE], learned.directions[0], atol=1e-6)
    saved = json.loads((tmp_path / "discover.json").read_text())
    assert saved["learned"]["method"] == "melbo"
    moved = saved["learned"]["displacement_vs_random"]
    assert len(moved["per_vector"]) == 2 and moved["ratio_ci"][0] <= moved["ratio_ci"][1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "3", "--target-layer", "2"], "must come before"),
        (["--layer", "1", "--radius", "-1"], "radius R must be positive"),
        (["--layer", "1", "--k", "100"], "do not fit in d_model"),
    ],
)
def test_cli_bad_input_exits_2(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = ["discover", "--method", "melbo", "--model", str(tiny_model_dir)]
    assert main([*argv, *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_cli_empty_prompts_exits_2(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = ["discover", "--method", "jacobian", "--model", str(tiny_model_dir), "--layer", "1"]
    assert main([*argv, "--prompts", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "empty" in capsys.readouterr().err


def test_cli_melbo_end_to_end(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["discover", "--method", "melbo", "--model", str(tiny_model_dir), "--layer", "1"]
    argv += ["--target-layer", "3", "--k", "1", "--iterations", "2", "--n-prompts", "2"]
    argv += ["--n-damage", "2", "--max-new-tokens", "3", "--n-random", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "melbo" and result["learned"]["target_layer"] == 3
    assert {c["name"] for c in result["candidates"]} == {"c000pos", "c000neg"}
    assert (out / "candidates" / "c000neg.safetensors").exists()
    assert main([*argv[:-2], "--out", str(tmp_path / "o2")]) == 0  # the text rendering works


def test_learn_uses_twelve_built_in_prompts_or_all_of_the_callers(tiny_model: Model) -> None:
    """Built-in instructions: the first 12 (each step runs k x prompts rows); a caller's own
    prompts: all of them, up to 64."""
    from workbench.decompose.unsupervised import learn

    builtin = learn(tiny_model, "melbo", source=1, target=3, k=1, iterations=1)
    assert len(builtin.recipe["prompt_texts"]) == 12
    mine = [f"Prompt number {i} asks something." for i in range(70)]
    own = learn(tiny_model, "jacobian", source=1, target=3, k=1, iterations=1, prompts=mine)
    assert own.recipe["prompt_texts"] == mine[:64]
