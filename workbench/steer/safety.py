"""Numeric safety of steering: coefficients the model's numbers can hold, and loud failures.

Three checks, applied by :mod:`workbench.steer.plan` and :mod:`workbench.steer.apply` to every
plan, so every verb (steer, sweep, compose, measure, discover) gets them:

* **Refused**: a coefficient whose added vector does not fit the model's dtype. An entry beyond
  the dtype's range is inf; a vector whose squared norm passes float32's range (norm over ~1.8e19)
  makes the model's normalisation (RMSNorm or LayerNorm square the residual) overflow, and the
  steered positions come out blanked to zero: fluent text, silently unsteered.
* **Warned**: an added vector over :data:`MAX_RESIDUAL_RATIO` (100) times the median residual
  norm at its layer. The model then sees mostly the vector; the text is rarely meaningful. The
  warning goes to the log (stderr in the CLI) and into the run's notes (the verbs' JSON).
* **Reported**: NaN or inf in steered activations or in the logits stops the run with a
  :class:`~workbench.errors.WorkbenchError`, so garbage is never decoded and printed as text.
"""

from __future__ import annotations

import logging
import math

import torch

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

MAX_RESIDUAL_RATIO = 100.0
# The normalisation layers square the residual in at least float32.
_MAX_NORM = math.sqrt(torch.finfo(torch.float32).max)
_WARNED: set[str] = set()  # the log gets each warning once per process; notes get it every run


def largest_addition(direction: torch.Tensor, coeffs: list[float]) -> tuple[float, float, int]:
    """``(norm, max |entry|, index of its coefficient)`` of the largest ``coeff x direction``.

    ``direction`` is ``(d,)``, ``(rows, d)`` (the largest row counts) or ``(heads, d_head)``.
    """
    norm, peak = _size(direction)
    i = max(range(len(coeffs)), key=lambda j: abs(coeffs[j]))
    c = abs(coeffs[i])
    return c * norm, c * peak, i


def _size(direction: torch.Tensor) -> tuple[float, float]:
    t = direction.double()
    norm = float(t.norm(dim=-1).max()) if t.dim() == 2 else float(t.norm())
    return norm, float(t.abs().max())


def check_fits_dtype(
    direction: torch.Tensor, raw: list[float], shown: list[float], dtype: torch.dtype, where: str
) -> None:
    """Refuse coefficients whose added vector is not finite in ``dtype`` (see the module).

    ``raw`` multiply the stored ``direction``; ``shown`` are the same coefficients as the user
    gave them (e.g. in norm units), for the message.
    """
    dtype_max = float(torch.finfo(dtype).max) if dtype.is_floating_point else math.inf
    norm, peak, i = largest_addition(direction, raw)
    if norm < _MAX_NORM and peak < dtype_max:
        return
    dir_norm, dir_peak = _size(direction)
    per_shown = abs(raw[i] / shown[i])  # raw multiplier per unit of the user's coefficient
    most = min(_MAX_NORM / dir_norm, dtype_max / dir_peak) / per_shown
    raise WorkbenchError(
        f"coefficient {shown[i]:g} {where} adds a vector of norm {norm:.3g}, which "
        f"{str(dtype).removeprefix('torch.')} cannot hold (the model's normalisation would "
        f"overflow and blank the steered positions): use a coefficient below {most:.3g}, "
        f"better under {MAX_RESIDUAL_RATIO:g}x the residual norm"
    )


def residual_ratio_note(added: float, residual: float, coeff: float, where: str) -> str | None:
    """A warning when ``added`` is over :data:`MAX_RESIDUAL_RATIO` x ``residual``, else None.

    The warning is logged (once per process) and returned for the run's notes.
    """
    if not residual > 0 or added <= MAX_RESIDUAL_RATIO * residual:
        return None
    msg = (
        f"coefficient {coeff:g} {where} adds a vector of norm {added:.3g}, "
        f"{added / residual:.0f}x the median residual norm there ({residual:.3g}); above "
        f"{MAX_RESIDUAL_RATIO:g}x the model sees mostly the vector and its text is rarely "
        "meaningful: lower the coefficient"
    )
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning("warning: %s", msg)
    return msg


def median_norm(act: torch.Tensor) -> float:
    """Median L2 norm of the positions of ``act`` ``(batch, pos, *feat)``."""
    flat = act.detach().reshape(act.shape[0] * act.shape[1], -1).float()  # (batch * pos, width)
    norms = flat.norm(dim=-1)  # (batch * pos,)
    norms = norms[torch.isfinite(norms)]
    return float(norms.median()) if len(norms) else float("nan")


def check_finite(t: torch.Tensor, what: str, fix: str) -> None:
    """Raise a one-line error if ``t`` holds NaN or inf (``what`` and ``fix`` fill the line)."""
    if not bool(torch.isfinite(t).all()):
        raise WorkbenchError(f"{what} hold NaN or inf; {fix}")


class FiniteScores:
    """First link of a generation's logits-processor chain: stop on NaN or inf logits."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        check_finite(
            scores,
            "the next-token logits",
            "the steered model broke down; lower the coefficient (or load it in float32)",
        )
        return scores
