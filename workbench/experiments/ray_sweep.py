"""Sweep layers as Ray tasks: each layer's record computed on a worker, merged by the driver.

A task loads the model once per worker process (:func:`workbench.model.load.load_model` keeps
it) and runs :func:`workbench.experiments.sweep.sweep_layer`, controls included, so a layer's
record is the one the single-process sweep writes. The driver collects the records in layer
order; Ray retries a task whose worker died.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from workbench.activations.ray_session import connect, worker_resources
from workbench.experiments.sweep import SweepConfig, sweep_layer
from workbench.measure.effects import EffectSpec, MeasureSpec
from workbench.model.load import Model, load_model
from workbench.vectors.vector import SteeringVector

MAX_RETRIES = 3


def _sweep_layer_task(
    model_name: str,
    dtype: str,
    device: str,
    vector: SteeringVector,
    layer: int,
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
    label: str,
) -> dict[str, Any]:
    model = load_model(model_name, dtype=dtype, device=device)  # cached in the worker process
    return sweep_layer(model, vector, layer, config, spec, effect, label=label)


def sweep_layers_ray(
    model: Model,
    vector: SteeringVector,
    layers: list[int],
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
    *,
    label: str,
    address: str | None,
) -> Iterator[dict[str, Any]]:
    """Start one Ray task per layer and yield the layers' records in the order of ``layers``."""
    ray = connect(address)
    options, device = worker_resources(ray)
    task = ray.remote(max_retries=MAX_RETRIES, **options)(_sweep_layer_task)
    dtype = str(model.info.get("dtype", "float32"))
    shared = [ray.put(x) for x in (vector, config, spec, effect)]
    refs = [
        task.remote(model.name, dtype, device, shared[0], layer, *shared[1:], label)
        for layer in layers
    ]
    got = 0
    try:
        for ref in refs:
            yield ray.get(ref)
            got += 1
    finally:
        # Only tasks an early exit (an error, Ctrl-C) leaves running are cancelled: cancelling a
        # task that has finished or is finishing can crash the driver in Ray's own task manager
        # ("Tried to complete task that was not pending", seen with Ray 2.60 in this test suite).
        left = refs[got:]
        if left:
            _, running = ray.wait(left, num_returns=len(left), timeout=0)
            for ref in running:
                ray.cancel(ref)
