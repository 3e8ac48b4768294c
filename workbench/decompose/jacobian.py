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

from collections.abc import Sequence

import torch

from dictionaries import progress
from workbench.decompose.learned import (
    DEFAULT_MEASURE,
    DEFAULT_RADIUS,
    Displacement,
    Learned,
    frozen,
    orthonormal,
    prepare,
)
from workbench.model.hooks import eager_attention
from workbench.model.load import Model

RADIUS_UNITS = "mean residual norm of the source layer (objective only)"


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
    setup = prepare(
        model,
        source=source,
        target=target,
        k=k,
        radius=radius,
        iterations=iterations,
        measure=measure,
        prompts=prompts,
        n_prompts=n_prompts,
        seed=seed,
    )
    texts, v = setup.texts, setup.start
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
            objective = disp.rows(v * radius * setup.mean_norm)
    # radius does not change the directions (the map is linearised): only the objective's
    return setup.learned("jacobian", v, objective, radius_units=RADIUS_UNITS)
