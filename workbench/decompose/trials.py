"""Trial runs of many candidate directions at once: calibration, effects, sampled completions.

Every candidate is a unit direction ``u`` (model space) at one site; its coefficient is in units
of the layer's mean residual norm, the units ``workbench steer --units norm`` takes.

Calibration (:meth:`Trials.calibrate`): the largest coefficient whose held-out perplexity ratio
``exp(mean(steered loss - unsteered loss))`` stays within ``damage_budget``, found per candidate
by a secant search on the damage curve: each step is one batched pass over every candidate and
held-out text, so the cost grows with ``steps``, not with the number of candidates.

Batching: rows are (candidate, text) pairs, run ``batch_size`` rows per forward pass; one hook
(:func:`row_steering`) adds row ``r``'s own vector at every position, so it is also right under
the KV cache of generation. (A steering plan gives every row the same vectors, only the
coefficients may differ per row, so one plan per candidate would need one pass per candidate.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.errors import check
from workbench.measure.metrics import next_token_kl, token_logprobs
from workbench.measure.spec import actadd_sampling
from workbench.model.hooks import Site, hooks_applied
from workbench.model.load import Model
from workbench.steer.forward import encode_inputs, steered_logits
from workbench.steer.generate import generate_rows
from workbench.steer.sampling import Sampling


@dataclass
class TrialSettings:
    """How candidates are tried, calibrated and described (coefficients in norm units)."""

    damage_budget: float = 1.25
    coeff_start: float = 0.25
    coeff_min: float = 1 / 64
    coeff_max: float = 64.0
    steps: int = 2
    prompts: str = "builtin:neutral_prompts"
    n_prompts: int = 6
    damage_texts: str = "builtin:general"
    n_damage: int = 4
    damage_max_tokens: int = 24
    n_completion_prompts: int = 4
    max_new_tokens: int = 12
    n_top_tokens: int = 5
    n_words: int = 5
    n_random: int = 4
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        check(
            math.isfinite(self.damage_budget) and self.damage_budget > 1,
            f"damage budget {self.damage_budget} must be a perplexity ratio above 1 (e.g. 1.25)",
        )
        check(
            0 < self.coeff_min <= self.coeff_start <= self.coeff_max < math.inf,
            f"need 0 < coeff_min ({self.coeff_min}) <= coeff_start ({self.coeff_start}) <= "
            f"coeff_max ({self.coeff_max})",
        )
        for name in (
            "steps",
            "n_prompts",
            "n_damage",
            "damage_max_tokens",
            "n_completion_prompts",
            "max_new_tokens",
            "n_top_tokens",
            "n_words",
            "batch_size",
        ):
            check(int(getattr(self, name)) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        check(self.n_random >= 0, f"n_random={self.n_random} must be >= 0")

    def sampling(self) -> Sampling:
        """ActAdd's sampling settings (temperature 1, top-p 0.3, frequency penalty 1), seeded."""
        return actadd_sampling(self.max_new_tokens, self.seed)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Calibration:
    """Per candidate ``(C,)``: the suggested coefficient (norm units, NaN when even
    ``coeff_min`` breaks the budget), the perplexity ratio there, and whether the search hit
    ``coeff_max`` without crossing the budget."""

    coeff: np.ndarray
    ppl_ratio: np.ndarray
    capped: np.ndarray
    passes: int


class RowSteering:
    """Set ``deltas`` ``(rows, *feat)`` before a forward pass: row ``r`` gets ``deltas[r]``."""

    deltas: torch.Tensor | None = None


@contextlib.contextmanager
def row_steering(model: Model, site: Site, backend: str) -> Iterator[RowSteering]:
    """Add a different vector to every batch row at ``site``, at every position."""
    state = RowSteering()

    def fn(act: torch.Tensor) -> torch.Tensor | None:  # (batch, pos, *feat)
        d = state.deltas
        if d is None:
            return None
        check(d.shape[0] == act.shape[0], f"{d.shape[0]} row vectors for a batch of {act.shape[0]}")
        return act + d.view(d.shape[0], 1, *act.shape[2:]).to(act)

    with hooks_applied(model, [(site, fn)], backend=backend):
        yield state


@dataclass
class Trials:
    """Runs candidate x text rows through the model under :func:`row_steering`."""

    model: Model
    state: RowSteering
    s: TrialSettings
    backend: str

    def rows(
        self, deltas: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, last_only: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(cand (b,), text (b,), logits, mask)`` over every (candidate, text) row;
        ``deltas`` is ``(C, *feat)``, ``ids`` and ``mask`` ``(T, pos)``; ``last_only``: logits
        ``(b, 1, vocab)`` at each text's last token."""
        n_texts, bs = ids.shape[0], self.s.batch_size
        total = deltas.shape[0] * n_texts
        try:
            for a in range(0, total, bs):
                r = torch.arange(a, min(a + bs, total))  # (b,)
                cand, text = r // n_texts, r % n_texts
                self.state.deltas = deltas[cand]  # (b, *feat)
                out = steered_logits(
                    self.model,
                    (ids[text], mask[text]),
                    backend=self.backend,
                    batch_size=len(r),
                    last_only=last_only,
                )
                yield cand, text, out.logits, out.mask
        finally:
            self.state.deltas = None

    # -- damage and calibration -----------------------------------------------------------------

    def losses(self, deltas: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(C, T)`` mean next-token loss (nats/token) of every text under every delta."""
        out = torch.zeros(deltas.shape[0], ids.shape[0], dtype=torch.float64)
        for cand, text, logits, m in self.rows(deltas, ids, mask):
            lp = token_logprobs(logits, ids[text, : logits.shape[1]], m).double()  # (b, pos-1)
            count = (m[:, 1:].bool() & m[:, :-1].bool()).sum(1).clamp_min(1)  # (b,)
            out[cand, text] = -lp.sum(1) / count
        return out

    def calibrate(self, units: torch.Tensor, norm: float, texts: list[str]) -> Calibration:
        """The largest coefficient within the damage budget for every unit direction ``(C, *feat)``.

        Damage grows like a power of the coefficient (``log ratio ~ a * c^p``; ``p`` near 2 for
        small coefficients), so each pass predicts, per candidate, the coefficient that lands on
        the budget from its last measurements (secant in log-log space, ``p = 2`` after the
        first) and measures there. The suggestion is the largest measured coefficient within the
        budget. ``steps`` passes over every candidate (each one batched forward), then at most
        ``steps`` more over the candidates still without a coefficient within the budget.
        """
        s = self.s
        ids, mask = encode_inputs(self.model, texts, max_tokens=s.damage_max_tokens)
        base = self.losses(torch.zeros(1, *units.shape[1:]), ids, mask).mean()  # scalar
        n = units.shape[0]
        target = math.log(s.damage_budget)
        best = np.zeros(n)  # largest coefficient measured within budget (0: none)
        best_ratio = np.full(n, np.nan)
        over = np.full(n, np.inf)  # smallest coefficient measured over budget
        coeff = np.full(n, s.coeff_start)
        prev: list[tuple[float, float] | None] = [None] * n  # (coeff, log ratio) of last pass
        passes = 0
        # ``steps`` passes over every candidate, then up to ``steps`` more over those with no
        # measured coefficient within the budget yet (their guess lands lower each time).
        for step in range(2 * s.steps):
            todo = np.arange(n) if step < s.steps else np.flatnonzero(best == 0)
            todo = todo[(best[todo] > 0) | (coeff[todo] > s.coeff_min) | (step < s.steps)]
            if not len(todo):
                break
            c = torch.from_numpy(coeff[todo] * norm).float()  # (t,)
            deltas = units[todo] * c.view(-1, *([1] * (units.dim() - 1)))  # (t, *feat)
            log_r = (self.losses(deltas, ids, mask).mean(1) - base).numpy()  # (t,)
            passes += 1
            for j, lr_raw in zip(todo.tolist(), log_r.tolist(), strict=True):
                lr = max(lr_raw, 1e-6)
                if lr <= target and coeff[j] > best[j]:
                    best[j], best_ratio[j] = coeff[j], math.exp(lr_raw)
                if lr > target:
                    over[j] = min(over[j], coeff[j])
                p = 2.0
                last = prev[j]
                if last is not None and last[0] != coeff[j] and last[1] > 1e-6:
                    p = math.log(lr / last[1]) / math.log(coeff[j] / last[0])
                    p = min(max(p, 0.5), 4.0)
                prev[j] = (float(coeff[j]), lr)
                aim = 0.97 if step < s.steps else 0.8  # aim under the budget, lower when retrying
                guess = coeff[j] * (aim * target / lr) ** (1 / p)
                lo_bound = best[j] if best[j] > 0 else s.coeff_min
                hi_bound = over[j] if np.isfinite(over[j]) else s.coeff_max
                coeff[j] = min(max(guess, lo_bound, s.coeff_min), hi_bound, s.coeff_max)
        return Calibration(
            coeff=np.where(best > 0, best, np.nan),
            ppl_ratio=np.where(best > 0, best_ratio, np.nan),
            capped=~np.isfinite(over) & (best >= s.coeff_max),
            passes=passes,
        )

    # -- effects --------------------------------------------------------------------------------

    def effects(
        self, deltas: torch.Tensor, prompts: list[str]
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Per candidate: mean next-token KL(steered || unsteered) over prompts (nats), and the
        tokens whose probability rises most."""
        ids, mask = encode_inputs(self.model, prompts)
        zero = torch.zeros(1, *deltas.shape[1:])
        base = torch.cat(
            [lg[:, 0] for _, _, lg, _ in self.rows(zero, ids, mask, last_only=True)]
        )  # (T, vocab)
        base_p = torch.softmax(base.double(), -1)  # (T, vocab)
        kl = torch.zeros(deltas.shape[0], dtype=torch.float64)  # (C,)
        shift = torch.zeros(deltas.shape[0], base.shape[-1], dtype=torch.float64)  # (C, vocab)
        for cand, text, logits, _ in self.rows(deltas, ids, mask, last_only=True):
            final = logits[:, 0]  # (b, vocab)
            kl.index_add_(0, cand, next_token_kl(final, base[text]))
            shift.index_add_(0, cand, torch.softmax(final.double(), -1) - base_p[text])
        top = shift.topk(self.s.n_top_tokens, dim=-1).indices.tolist()  # (C, n_top)
        tokens = [[self.model.tokenizer.decode([t]) for t in row] for row in top]
        return (kl / len(prompts)).numpy(), tokens

    def completions(self, deltas: torch.Tensor, prompts: list[str]) -> list[list[str]]:
        """``[C][P]`` sampled completions: every candidate continues every prompt under the
        same noise (sample 0), so candidate rows differ from each other only by their vector."""
        n, p = deltas.shape[0], len(prompts)
        texts: list[str] = []
        bs = max(1, self.s.batch_size)
        for a in range(0, n * p, bs):
            r = list(range(a, min(a + bs, n * p)))
            self.state.deltas = deltas[[i // p for i in r]]
            try:
                gen = generate_rows(
                    self.model,
                    prompts,
                    [i % p for i in r],
                    [0] * len(r),
                    None,
                    self.s.sampling(),
                    backend=self.backend,
                )
            finally:
                self.state.deltas = None
            texts.extend(gen.texts)
        return [texts[c * p : (c + 1) * p] for c in range(n)]
