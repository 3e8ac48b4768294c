"""The linear cousin of MELBO: top singular vectors of the Jacobian from ``h_s`` to ``h_t``.

For a vector ``v`` added at ``resid_pre`` of layer ``s`` at every position, ``J v`` is the first
order change of ``resid_pre`` at layer ``t``. The directions that move layer ``t`` most for a
small push are the top eigenvectors of ``M = sum over prompts and positions of J^T J``: the
Gauss-Newton matrix of MELBO's objective (``p = 2``) at ``v = 0``, which equals its Hessian
there because the displacement is zero at ``v = 0``. So ``M V`` is a Hessian-vector product by
double backward through the displacement (eager attention), for all ``K`` columns in one batch (rows = vector x
prompt), and block power iteration with QR gives the top ``K`` directions without forming ``J``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from dictionaries import progress
from workbench.activations.collect import mean_residual_norms
from workbench.decompose.learned import (
    DEFAULT_MEASURE,
    DEFAULT_RADIUS,
    Displacement,
    Learned,
    check_setup,
    frozen,
    initial_directions,
    orthonormal,
    resolve_prompts,
)
from workbench.errors import check
from workbench.model.hooks import eager_attention
from workbench.model.load import Model


def _gauss_newton(disp: Displacement, v: torch.Tensor) -> torch.Tensor:
    """``M v_j`` for each row of ``v`` ``(k, d)``, ``(k, d)``: Hessian of the displacement at 0."""
    zero = torch.zeros_like(v, requires_grad=True)
    objective = disp.rows(zero).sum() / 2
    (grad,) = torch.autograd.grad(objective, zero, create_graph=True)  # (k, d), zero but graphed
    (hvp,) = torch.autograd.grad((grad * v).sum(), zero)
    return hvp


def train_jacobian(
    model: Model,
    *,
    source: int,
    target: int,
    k: int = 8,
    radius: float = DEFAULT_RADIUS,
    iterations: int = 20,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int | None = 12,
    seed: int = 0,
    measure: str = DEFAULT_MEASURE,
) -> Learned:
    """Top-``k`` right singular vectors of the source-to-target Jacobian (block power iteration).

    ``radius`` does not change the directions (the map is linearised); it is used only to report
    each direction's MELBO objective at that radius, comparable with :func:`train_melbo`'s.
    """
    check_setup(model, source, target, k, radius)
    check(iterations >= 1, f"iterations must be at least 1 (got {iterations})")
    texts = resolve_prompts(prompts, n_prompts)
    mean_norm = mean_residual_norms(model, [source])[source]
    v = initial_directions(k, model.d_model, seed).to(model.device)
    began = time.perf_counter()
    # Eager attention: the fused kernels have no double backward.
    what = f"jacobian: {k} directions, layer {source} -> {target}"
    with (
        frozen(model),
        eager_attention(model),
        progress.task(what, total=iterations, unit="power iterations"),
    ):
        disp = Displacement(model, texts, source, target, 2.0, measure)
        v = orthonormal(v)
        for step in range(iterations):
            progress.advance(step)
            v = orthonormal(_gauss_newton(disp, v))  # (k, d)
        # Rayleigh quotients order the directions (QR keeps power iteration's order only
        # approximately once eigenvalues are close).
        gain = (_gauss_newton(disp, v) * v).sum(dim=1)  # (k,)
        v = v[torch.argsort(gain, descending=True)]
        with torch.no_grad():
            objective = disp.rows(v * radius * mean_norm)
    return Learned(
        method="jacobian",
        directions=v.detach().cpu().float(),
        objective=[float(x) for x in objective],
        source=source,
        target=target,
        radius=radius,
        mean_norm=mean_norm,
        recipe={
            "method": "jacobian",
            "source_layer": source,
            "target_layer": target,
            "radius": radius,
            "radius_units": "mean residual norm of the source layer (objective only)",
            "k": k,
            "iterations": iterations,
            "measure": measure,
            "seed": seed,
            "prompts": prompts if isinstance(prompts, str) or prompts is None else "custom",
            "prompt_texts": texts,
        },
        seconds=time.perf_counter() - began,
        measure=measure,
    )
