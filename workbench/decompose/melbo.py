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

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.activations.collect import mean_residual_norms
from workbench.corpora import load_corpus
from workbench.errors import check
from workbench.model.hooks import Site, StopForward, hooks_applied, recording
from workbench.model.load import Model

# The default prompts: varied instructions (behaviours show up in answers to requests).
INSTRUCTIONS = (
    "Write a short poem about the sea.",
    "Explain how a bicycle works to a ten-year-old.",
    "Give me three tips for sleeping better.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How do I make a cup of tea?",
    'Translate "good morning" into French and Spanish.',
    "What is the capital of Australia?",
    "Write a polite email asking my manager for a day off.",
    "Tell me a joke about computers.",
    "How can I learn to play the guitar quickly?",
    "What are the pros and cons of working from home?",
    "Explain photosynthesis in simple terms.",
    "How should I prepare for a job interview?",
    "Write a short story that begins with a knock at the door.",
    "Why is the sky blue?",
    "How do I change a flat tyre?",
    "What happened during the French Revolution?",
    "Plan a one-day trip to the mountains.",
    "How can I save money on groceries?",
    "What should I do if I feel stressed at work?",
)
DEFAULT_PROMPTS = "instructions"  # the name of INSTRUCTIONS in recipes and --prompts


@dataclass
class Learned:
    """Directions found by MELBO or the Jacobian, and how they were found.

    ``directions`` ``(k, d_model)`` are unit rows in the model's residual space at ``resid_pre``
    of ``source``; ``objective[j]`` is direction ``j``'s displacement of layer ``target`` at
    radius ``radius`` (mean over prompts and positions of ``||delta h_t||^p``).
    """

    method: str
    directions: torch.Tensor  # (k, d_model)
    objective: list[float]
    source: int
    target: int
    radius: float
    mean_norm: float
    recipe: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_prompts(prompts: str | Sequence[str] | None, limit: int | None = None) -> list[str]:
    """The prompt texts: ``None`` or ``"instructions"`` gives :data:`INSTRUCTIONS`, anything else
    goes to :func:`~workbench.corpora.load_corpus`. An empty set is an error."""
    if prompts is None or prompts == DEFAULT_PROMPTS:
        texts = list(INSTRUCTIONS)
    else:
        texts = load_corpus(prompts)
    texts = [t for t in texts if t.strip()][:limit]
    check(len(texts) > 0, "the prompt set is empty: give --prompts with at least one prompt")
    return texts


def check_setup(model: Model, source: int, target: int, k: int, radius: float) -> None:
    """One-line errors for settings that cannot work (before anything runs)."""
    model.check_layer(source, "source layer")
    model.check_layer(target, "target layer")
    check(
        source < target,
        f"source layer {source} must come before target layer {target}: the vectors are added "
        "at the source and measured at the target",
    )
    check(radius > 0, f"radius R must be positive (got {radius:g})")
    check(
        0 < k <= model.d_model,
        f"k={k} orthogonal vectors do not fit in d_model={model.d_model}: use 1 <= k <= "
        f"{model.d_model}",
    )


@contextlib.contextmanager
def frozen(model: Model) -> Iterator[None]:
    """Weights without gradients inside the block (only the vectors train); flags restored."""
    check(model.hf is not None, f"{model.name} has no transformers model: MELBO needs it")
    params = list(model.hf.parameters())  # type: ignore[union-attr]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


class Displacement:
    """``h_t`` for a batch of prompts with a per-row vector added at ``resid_pre`` of ``s``.

    ``rows(v)`` with ``v`` ``(n, d_model)`` runs ``n x P`` rows (vector-major: row ``j * P + i``
    is vector ``j`` on prompt ``i``) and returns each vector's displacement objective ``(n,)``,
    differentiable in ``v``.
    """

    def __init__(
        self, model: Model, prompts: list[str], source: int, target: int, p: float = 2.0
    ) -> None:
        check(model.hf is not None, f"{model.name} has no transformers model: MELBO needs it")
        self.model, self.source, self.target, self.p = model, source, target, p
        ids, mask, _ = model.encode(prompts, max_tokens=48)
        self.ids, self.mask = ids.to(model.device), mask.to(model.device)  # (P, pos)
        # The objective leaves out BOS (the vector is still added there): its residual norm is
        # ~100x the others' in real models, and it would make the objective "move BOS" (on
        # SmolLM2-135M, 6 -> 18, it carried over 99% of it). Each prompt keeps >= 1 token.
        self.counted = self.mask.clone()  # (P, pos)
        if model.bos_token_id is not None:
            self.counted[:, 0] = 0
        with torch.no_grad():
            self.base = self.h_t(self.ids, self.mask, None)  # (P, pos, d_model)

    def h_t(self, ids: torch.Tensor, mask: torch.Tensor, add: torch.Tensor | None) -> torch.Tensor:
        """``resid_pre`` of the target layer, the pass stopped there; ``add`` ``(rows, d)``."""
        hooks = []
        if add is not None:
            shift = add.to(self.model.dtype)[:, None, :]  # (rows, 1, d_model)
            hooks.append((Site("resid_pre", self.source), lambda x: x + shift))
        target = Site("resid_pre", self.target)
        hf: Any = self.model.hf
        with (
            hooks_applied(self.model, hooks, backend="hf"),
            recording(self.model, [target], backend="hf", detach=False, stop=True) as seen,
            contextlib.suppress(StopForward),
        ):
            hf(input_ids=ids, attention_mask=mask, use_cache=False)
        return seen[target].float()

    def rows(self, v: torch.Tensor) -> torch.Tensor:
        n, n_prompts = v.shape[0], self.ids.shape[0]
        ids = self.ids.repeat(n, 1)  # (n * P, pos)
        mask = self.mask.repeat(n, 1)
        add = v.repeat_interleave(n_prompts, dim=0)  # (n * P, d_model)
        delta = self.h_t(ids, mask, add) - self.base.repeat(n, 1, 1)  # (n * P, pos, d_model)
        # Squared norm first: the norm's own gradient is NaN at zero displacement.
        counted = self.counted.repeat(n, 1)  # (n * P, pos)
        per_pos = (delta * delta).sum(dim=-1) ** (self.p / 2) * counted  # (n * P, pos)
        per_vec = per_pos.view(n, n_prompts, -1).sum(dim=(1, 2))  # (n,)
        return per_vec / self.counted.sum()


def orthonormal(v: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of ``v`` ``(n, d)`` made orthonormal in order (QR), and orthogonal to the orthonormal
    rows of ``fixed`` first; each row keeps the sign of its part along the previous row."""
    if fixed is not None and fixed.shape[0]:
        v = v - (v @ fixed.T) @ fixed  # (n, d)
    q, r = torch.linalg.qr(v.T.double())  # q (d, n), r (n, n)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1
    return (q * sign).T.to(v.dtype)  # (n, d)


def initial_directions(k: int, d_model: int, seed: int) -> torch.Tensor:
    """``(k, d_model)`` random unit rows; row ``j`` depends only on ``(seed, j)``, so a vector
    starts the same whether it trains in a batch or alone."""
    rows = [
        torch.randn(d_model, generator=torch.Generator().manual_seed(seed * 100_003 + j))
        for j in range(k)
    ]
    v = torch.stack(rows)  # (k, d_model)
    return v / v.norm(dim=1, keepdim=True)


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
    for _ in range(iterations):
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
    radius: float = 1.0,
    iterations: int = 100,
    lr: float = 0.05,
    p: float = 2.0,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int | None = 12,
    seed: int = 0,
    batched: bool = True,
    orthogonal: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> Learned:
    """Learn ``k`` orthogonal steering vectors at ``resid_pre`` of ``source`` (see module doc).

    ``radius`` is in units of the source layer's mean residual norm. ``batched`` trains all
    vectors in one batch (one forward per step); otherwise one after another.
    """
    check_setup(model, source, target, k, radius)
    check(iterations >= 1, f"iterations must be at least 1 (got {iterations})")
    texts = resolve_prompts(prompts, n_prompts)
    mean_norm = mean_residual_norms(model, [source])[source]
    scale = radius * mean_norm
    start = initial_directions(k, model.d_model, seed).to(model.device)
    began = time.perf_counter()
    with frozen(model):
        disp = Displacement(model, texts, source, target, p)
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
    return Learned(
        method="melbo",
        directions=found.cpu().float(),
        objective=[float(x) for x in objective],
        source=source,
        target=target,
        radius=radius,
        mean_norm=mean_norm,
        recipe={
            "method": "melbo",
            "source_layer": source,
            "target_layer": target,
            "radius": radius,
            "radius_units": "mean residual norm of the source layer",
            "k": k,
            "iterations": iterations,
            "lr": lr,
            "p": p,
            "seed": seed,
            "batched": batched,
            "prompts": prompts if isinstance(prompts, str) or prompts is None else "custom",
            "prompt_texts": texts,
        },
        seconds=time.perf_counter() - began,
    )
