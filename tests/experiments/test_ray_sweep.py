"""Sweep on Ray: one task per layer gives the single-process sweep's records, controls included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench.experiments.sweep import SweepConfig, run_sweep
from workbench.experiments.sweep_files import read_done
from workbench.measure.effects import MeasureSpec, actadd_sampling, default_effect, target_set
from workbench.model.load import Model
from workbench.vectors.build import from_prompts

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e .[ray]")

PROMPTS = ["I went up to my friend and said", "The weather today is"]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_sweep_equals_single_process(ray_local: Any, tiny_model: Model, tmp_path: Path) -> None:
    vec = from_prompts(tiny_model, " wedding", " ", [1])
    spec = MeasureSpec(
        prompts=PROMPTS,
        targets=[target_set(tiny_model, ["wedding", "bride"])],
        off_target=["The bus runs every fifteen minutes."],
        on_target=["The bride and groom exchanged vows."],
        neutral=PROMPTS,
        n=1,
        sampling=actadd_sampling(4),
    )
    cfg = SweepConfig(coeffs=[0, 2, 32], layers=[2, 1], attention_prompts=1, controls=2)
    effect = default_effect(spec)
    local = run_sweep(tiny_model, vec, cfg, spec, effect, out=tmp_path / "one")
    remote = run_sweep(tiny_model, vec, cfg, spec, effect, out=tmp_path / "ray", ray="local")
    assert json.dumps(remote) == json.dumps(local)  # same numbers, layer order, controls
    assert remote["controls"]["by_layer"][0]["matched"] is not None
    assert list(read_done(tmp_path / "ray" / "rows.jsonl")) == [2, 1]
