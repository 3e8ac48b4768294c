"""Unsupervised steering vectors (MELBO): directions at layer s that most move layer t.

"Mechanistically eliciting latent behaviors" learns vectors ``v`` of fixed norm added to the
residual stream (``resid_pre``) of a source layer ``s`` at every position, maximising how far
they move the residual stream at a later target layer ``t`` over a set of prompts::

    objective(v) = mean over prompts and real positions but BOS of ||h_t(x; +v) - h_t(x)||^p

No labels are used: the vectors that move layer ``t`` most tend to switch what the model does
(language, persona, refusal), which decomposing a corpus does not find.

Here all ``K`` vectors train **in one batch**: each (vector, prompt) pair is a row of one forward
pass that stops after layer ``t`` (:class:`~workbench.model.hooks.StopForward`), with the row's
own vector added. After each Adam step the vectors are made orthonormal by a QR decomposition in
their index order (vector ``j`` keeps only its part orthogonal to vectors ``0..j-1``, as
Gram-Schmidt would) and rescaled to the radius ``R`` (units: the source layer's mean residual
norm, :func:`~workbench.activations.collect.mean_residual_norms`). ``batched=False`` trains
them one after another, each projected off the finished ones: the public implementations' way,
kept as the benchmark's baseline.

The model's weights are frozen while training (``requires_grad`` off, restored after); only the
vectors get gradients. The linear cousin, top singular vectors of the Jacobian from ``h_s`` to
``h_t``, is :mod:`workbench.decompose.jacobian`.

Example:
    >>> found = train_melbo(model, source=4, target=12, k=8)  # doctest: +SKIP
    >>> found.directions.shape   # unit rows, (8, d_model)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
from workbench.model.load import Model


def _train(
    disp: Displacement,
    start: torch.Tensor,
    fixed: torch.Tensor | None,
    scale: float,
    iterations: int,
    lr: float,
    orthogonal: bool,
) -> torch.Tensor:
    """Adam on the unit rows ``start`` ``(n, d)``: maximise the sum of their objectives at
    norm ``scale``, projecting back to orthonormal (or just unit) rows after each step."""
    unit = (orthonormal(start, fixed) if orthogonal else start).clone().requires_grad_(True)
    opt = torch.optim.Adam([unit], lr=lr)
    for step in range(iterations):
        progress.advance(step)
        opt.zero_grad()
        # Summed, not averaged, so each vector's gradient does not depend on how many share
        # the batch.
        loss = -disp.rows(unit * scale).sum()
        loss.backward()
        assert unit.grad is not None
        with torch.no_grad():
            # Only the part the constraint lets the vector move along (off itself, the earlier
            # vectors and the fixed ones): Adam's per-coordinate scaling would otherwise turn
            # the rest into a sideways step, and the projected iteration would settle where
            # the gradient is not normal to the constraint (not at a constrained maximum).
            along = unit.grad @ unit.T  # (n, n)
            # Row j: off rows 0..j when they are kept orthogonal, else off itself only.
            along = torch.tril(along) if orthogonal else torch.diag(torch.diagonal(along))
            unit.grad -= along @ unit
            if fixed is not None:
                unit.grad -= (unit.grad @ fixed.T) @ fixed
        opt.step()
        with torch.no_grad():
            if orthogonal:
                unit.copy_(orthonormal(unit, fixed))
            else:
                unit.div_(unit.norm(dim=1, keepdim=True))
    return unit.detach()


def train_melbo(
    model: Model,
    *,
    source: int,
    target: int,
    k: int = 8,
    radius: float = DEFAULT_RADIUS,
    iterations: int = 100,
    lr: float = 0.05,
    p: float = 2.0,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int | None = 12,
    seed: int = 0,
    batched: bool = True,
    orthogonal: bool = True,
    measure: str = DEFAULT_MEASURE,
    on_step: Callable[[int], None] | None = None,
) -> Learned:
    """Learn ``k`` orthogonal steering vectors at ``resid_pre`` of ``source`` (see module doc).

    ``radius`` is in units of the source layer's mean residual norm. ``batched`` trains all
    vectors in one batch (one forward per step); otherwise one after another.
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
    texts, start, scale = setup.texts, setup.start, radius * setup.mean_norm
    what = f"melbo: {k} vectors, layer {source} -> {target}"
    with frozen(model), progress.task(what, total=iterations, unit="steps"):
        disp = Displacement(model, texts, source, target, p, measure)
        if batched:
            found = _train(disp, start, None, scale, iterations, lr, orthogonal)
        else:
            done: list[torch.Tensor] = []
            for j in range(k):
                fixed = torch.stack(done) if done and orthogonal else None
                done.append(
                    _train(disp, start[j : j + 1], fixed, scale, iterations, lr, orthogonal)[0]
                )
                if on_step is not None:
                    on_step(j)
            found = torch.stack(done)
        with torch.no_grad():
            objective = disp.rows(found * scale)
    return setup.learned(
        "melbo", found, objective, power=p, lr=lr, p=p, batched=batched, orthogonal=orthogonal
    )
