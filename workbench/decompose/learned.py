"""What MELBO and the Jacobian share: prompts, settings checks, frozen weights, the
displacement objective, orthonormal directions, and how far learned directions move the target
layer against norm-matched random ones.

A learned direction is a unit row in the residual space at ``resid_pre`` of a source layer ``s``;
at radius ``R`` (units: ``s``'s mean residual norm, as steering coefficients are) it is added at
every position, and its objective is the mean over prompts and positions but BOS of
``||h_t(x; +R v) - h_t(x)||^p`` at ``resid_pre`` of a target layer ``t``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
    p: float = 2.0  # the objective's power
    measure: str = "raw"  # how the displacement is measured (MEASURES)


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


# How the displacement of h_t is measured. "raw": MELBO's ||delta h_t|| (a direction that makes
# one position's norm explode scores highest); "direction": the change of h_t / ||h_t||, at
# most 2 per position, so the objective rewards turning many positions, not inflating one.
MEASURES = ("raw", "direction")
# Defaults measured by benchmarks/bench_melbo_radius.py on SmolLM2-135M (README, "Learning
# vectors without labels"): R is the largest radius of the sweep at which every trained vector,
# steered at R, keeps the damage budget; above it MELBO finds directions that break the text.
# "direction" because "raw" let one exploding position dominate (interval 9-1128x at R = 1/32,
# against 10-22x for "direction").
DEFAULT_RADIUS = 1 / 32
DEFAULT_MEASURE = "direction"


def check_measure(measure: str) -> None:
    check(measure in MEASURES, f"unknown displacement measure {measure!r}: use raw or direction")


class Displacement:
    """``h_t`` for a batch of prompts with a per-row vector added at ``resid_pre`` of ``s``.

    ``rows(v)`` with ``v`` ``(n, d_model)`` runs ``n x P`` rows (vector-major: row ``j * P + i``
    is vector ``j`` on prompt ``i``) and returns each vector's displacement objective ``(n,)``,
    differentiable in ``v``.
    """

    def __init__(
        self,
        model: Model,
        prompts: list[str],
        source: int,
        target: int,
        p: float = 2.0,
        measure: str = "raw",
    ) -> None:
        check(model.hf is not None, f"{model.name} has no transformers model: MELBO needs it")
        check_measure(measure)
        self.model, self.source, self.target, self.p = model, source, target, p
        self.measure = measure
        ids, mask, _ = model.encode(prompts, max_tokens=48)
        self.ids, self.mask = ids.to(model.device), mask.to(model.device)  # (P, pos)
        # The objective leaves out BOS (the vector is still added there): its residual norm is
        # ~100x the others' in real models, and it would make the objective "move BOS" (on
        # SmolLM2-135M, 6 -> 18, it carried over 99% of it). Each prompt keeps >= 1 token.
        self.counted = self.mask.clone()  # (P, pos)
        if model.bos_token_id is not None:
            self.counted[:, 0] = 0
        with torch.no_grad():
            self.base = self._measured(self.h_t(self.ids, self.mask, None))  # (P, pos, d_model)

    def _measured(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` as the objective compares it: as is (raw) or as unit rows (direction)."""
        if self.measure == "direction":
            return h / h.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return h

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
        """Each vector's objective ``(n,)``: the mean over every counted position."""
        return self.per_prompt(v).sum(dim=1) / self.counted.sum()

    def per_prompt(self, v: torch.Tensor) -> torch.Tensor:
        """``(n, P)``: each vector's summed ``||delta h_t||^p`` over each prompt's counted
        positions (for intervals over prompts); :meth:`rows` is its normalised sum."""
        n, n_prompts = v.shape[0], self.ids.shape[0]
        ids = self.ids.repeat(n, 1)  # (n * P, pos)
        mask = self.mask.repeat(n, 1)
        add = v.repeat_interleave(n_prompts, dim=0)  # (n * P, d_model)
        moved = self._measured(self.h_t(ids, mask, add))  # (n * P, pos, d_model)
        delta = moved - self.base.repeat(n, 1, 1)
        # Squared norm first: the norm's own gradient is NaN at zero displacement.
        counted = self.counted.repeat(n, 1)  # (n * P, pos)
        per_pos = (delta * delta).sum(dim=-1) ** (self.p / 2) * counted  # (n * P, pos)
        return per_pos.view(n, n_prompts, -1).sum(dim=2)  # (n, P)


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


@dataclass
class Setup:
    """What MELBO and the Jacobian begin with (:func:`prepare`), and how their result is
    recorded (:meth:`learned`)."""

    source: int
    target: int
    k: int
    radius: float
    iterations: int
    measure: str
    seed: int
    prompts: str | Sequence[str] | None
    texts: list[str]
    mean_norm: float  # the source layer's mean residual norm (R's unit)
    start: torch.Tensor  # (k, d_model) seeded unit rows, on the model's device
    began: float

    def learned(
        self,
        method: str,
        directions: torch.Tensor,
        objective: torch.Tensor,
        *,
        power: float = 2.0,
        **recipe: Any,
    ) -> Learned:
        """The result, with the recipe both methods record plus the method's own ``recipe``."""
        return Learned(
            method=method,
            directions=directions.detach().cpu().float(),
            objective=[float(x) for x in objective],
            source=self.source,
            target=self.target,
            radius=self.radius,
            mean_norm=self.mean_norm,
            recipe={
                "method": method,
                "source_layer": self.source,
                "target_layer": self.target,
                "radius": self.radius,
                "radius_units": "mean residual norm of the source layer",
                "k": self.k,
                "iterations": self.iterations,
                **recipe,
                "measure": self.measure,
                "seed": self.seed,
                "prompts": self.prompts
                if isinstance(self.prompts, str) or self.prompts is None
                else "custom",
                "prompt_texts": self.texts,
            },
            seconds=time.perf_counter() - self.began,
            p=power,
            measure=self.measure,
        )


def check_learning(
    model: Model,
    *,
    source: int,
    target: int,
    k: int,
    radius: float,
    iterations: int = 1,
    measure: str = DEFAULT_MEASURE,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int | None = None,
) -> list[str]:
    """Every check a learning run makes before any work (one-line errors); the prompt texts.

    :func:`prepare` runs it, and callers that claim an output first run it before the claim.
    """
    check_setup(model, source, target, k, radius)
    check(iterations >= 1, f"iterations must be at least 1 (got {iterations})")
    check_measure(measure)
    return resolve_prompts(prompts, n_prompts)


def prepare(
    model: Model,
    *,
    source: int,
    target: int,
    k: int,
    radius: float,
    iterations: int,
    measure: str,
    prompts: str | Sequence[str] | None,
    n_prompts: int | None,
    seed: int,
) -> Setup:
    """Check the settings, load the prompts, measure R's unit and draw the starting directions;
    the clock starts here."""
    texts = check_learning(
        model,
        source=source,
        target=target,
        k=k,
        radius=radius,
        iterations=iterations,
        measure=measure,
        prompts=prompts,
        n_prompts=n_prompts,
    )
    mean_norm = mean_residual_norms(model, [source])[source]
    start = initial_directions(k, model.d_model, seed).to(model.device)
    return Setup(
        source,
        target,
        k,
        radius,
        iterations,
        measure,
        seed,
        prompts,
        texts,
        mean_norm,
        start,
        time.perf_counter(),
    )


def displacement_vs_random(
    model: Model,
    learned: Learned,
    *,
    n_random: int = 16,
    seed: int = 12345,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """How much more the learned directions move the target layer than random ones.

    ``n_random`` norm-matched random directions at the same radius, on the same prompts; the
    ratio is the learned directions' mean objective over the random directions' mean, with a
    95% bootstrap interval over prompts (both sets resampled by the same prompts), and each
    direction's own ratio.
    """
    texts = learned.recipe["prompt_texts"]
    scale = learned.radius * learned.mean_norm
    g = torch.Generator().manual_seed(seed)
    random = torch.randn(n_random, model.d_model, generator=g, dtype=torch.float64)
    random = (random / random.norm(dim=1, keepdim=True)).float()
    with frozen(model), torch.no_grad():
        disp = Displacement(
            model, texts, learned.source, learned.target, learned.p, learned.measure
        )
        ours = disp.per_prompt(learned.directions.to(model.device) * scale).double().cpu()
        theirs = disp.per_prompt(random.to(model.device) * scale).double().cpu()  # (n_random, P)
    ours_np, theirs_np = ours.numpy(), theirs.numpy()  # (k, P), (n_random, P)
    rng = np.random.default_rng(seed)
    n_prompts = ours_np.shape[1]
    picks = rng.integers(0, n_prompts, size=(n_boot, n_prompts))  # (n_boot, P)
    boot = ours_np.mean(0)[picks].sum(1) / np.maximum(theirs_np.mean(0)[picks].sum(1), 1e-30)
    random_mean = max(float(theirs_np.mean()), 1e-30)
    return {
        "ratio": float(ours_np.mean() / random_mean),
        "ratio_ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "per_vector": [float(x) for x in ours_np.mean(1) / random_mean],
        "random_spread": [float(x) for x in np.quantile(theirs_np.mean(1) / random_mean, [0, 1])],
        "n_random": n_random,
        "n_prompts": n_prompts,
        "radius": learned.radius,
    }
