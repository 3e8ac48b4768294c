"""Applying a :class:`~workbench.steer.plan.SteeringPlan` to a model, position by position.

:func:`apply_plan` registers one hook per (entry, layer) through :mod:`workbench.model.hooks` and
removes them all on exit or on any error. Position policies need the absolute position of every
column of every forward pass, including under the KV cache, where the first call carries the
prompt and each later call one new token. Each hook sees its site exactly once per forward pass,
so it tracks positions itself from the activation's length:

* a call of more than one position starts at column 0 (a prompt, or an uncached generation
  step that re-reads the whole sequence);
* a one-position call continues where the previous call ended (a cached generation step),
  unless it is the first call since :meth:`PlanRun.reset`.

(Positions are not tracked with a hook on the model's root: TransformerLens's ``generate`` calls
``model.forward`` directly, which skips root-module hooks, so steering would silently stop.)

The first call after a reset fixes the prompt width; columns at or beyond it are generated
tokens. Rows of a left-padded batch start at their pad offset (``pad_offsets``), and their
prompts hold ``prompt_lengths`` real tokens; without them every row is taken to be unpadded and
as long as the first call. Independent forward passes inside one ``apply_plan`` block must call
``run.reset(...)`` in between (the helpers in :mod:`workbench.steer.forward` and
:mod:`workbench.steer.generate` enter a fresh block per batch).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from workbench.errors import WorkbenchError
from workbench.model.hooks import ActFn, Site, default_backend, hooks_applied
from workbench.model.load import Model
from workbench.steer import safety
from workbench.steer.plan import PlanEntry, SteeringPlan

log = logging.getLogger(__name__)


@dataclass
class _Part:
    """One entry at one layer, with its tensors precomputed in the model's dtype."""

    entry: PlanEntry
    layer: int
    rows_ext: torch.Tensor  # (n + 1, *feat): window rows and a final zero row for "no add"
    const: torch.Tensor  # (coeff_rows, 1, *feat): coeff x direction, for position "all"
    coeff: torch.Tensor  # (coeff_rows, 1, *[1] * len(feat))
    added: float  # norm of the largest vector this part adds (largest |coeff| x largest row)
    shown: float  # that coefficient as the user gave it

    @property
    def n(self) -> int:
        return int(self.rows_ext.shape[0]) - 1


@dataclass
class _Layout:
    pad: torch.Tensor  # (batch,) first real column of each row
    lengths: torch.Tensor  # (batch,) real prompt tokens of each row
    width: int  # columns of the prompt call; later columns are generated tokens


class PlanRun:
    """Live state of a plan applied to a model (yielded by :func:`apply_plan`).

    Attributes:
        notes: human-readable remarks, e.g. a vector clipped to a short prompt.
    """

    def __init__(
        self,
        model: Model,
        plan: SteeringPlan,
        *,
        backend: str,
        pad_offsets: Sequence[int] | torch.Tensor | None = None,
        prompt_lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        self.plan = plan
        self.notes: list[str] = []
        root = model.tl if backend == "tl" else model.hf
        if root is None:
            raise WorkbenchError(f"model {model.name} has no transformers twin: use backend 'tl'")
        param = next(root.parameters())
        self._parts = [
            _build_part(e, layer, param.dtype, param.device)
            for e in plan.entries
            for layer in (e.layers or [])
        ]
        self._ratio_checked = [False] * len(self._parts)
        self.reset(pad_offsets, prompt_lengths)

    def reset(
        self,
        pad_offsets: Sequence[int] | torch.Tensor | None = None,
        prompt_lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Start a new sequence: the next forward call is a prompt at column 0."""
        pad, lengths = _as_long(pad_offsets), _as_long(prompt_lengths)
        if pad is not None and lengths is not None and len(pad) != len(lengths):
            raise WorkbenchError(
                f"{len(pad)} pad offsets but {len(lengths)} prompt lengths; "
                "give one of each per batch row"
            )
        self._pad, self._lengths = pad, lengths
        rows = self._pad if self._pad is not None else self._lengths
        if rows is not None and self.plan.rows is not None and len(rows) != self.plan.rows:
            raise WorkbenchError(
                f"the plan has {self.plan.rows} coefficients per entry but the batch has "
                f"{len(rows)} rows; give one coefficient per row"
            )
        self._layout: _Layout | None = None
        self._next = [0] * len(self._parts)  # per hook: the column its next call starts at

    def hooks(self) -> list[tuple[Site, ActFn]]:
        """One ``(site, fn)`` per entry and layer; each tracks the positions its site sees."""
        return [
            (Site(p.entry.vector.site, p.layer), self._hook(k)) for k, p in enumerate(self._parts)
        ]

    def _hook(self, k: int) -> ActFn:
        part = self._parts[k]

        def fn(act: torch.Tensor) -> torch.Tensor | None:
            seq_len = int(act.shape[1])
            start = 0 if seq_len > 1 or self._next[k] == 0 else self._next[k]
            self._next[k] = start + seq_len
            if self._layout is None:
                self._layout = self._resolve(seq_len)
            delta = _delta(part, self._layout, start, seq_len)
            if delta is None:
                return None
            if delta.shape[0] not in (1, act.shape[0]):
                raise WorkbenchError(
                    f"the plan has {delta.shape[0]} batch rows (coefficients or prompt lengths) "
                    f"but the model was run on {act.shape[0]}; give one per row"
                )
            if not self._ratio_checked[k]:
                self._ratio_checked[k] = True
                self._note_ratio(part, act)
            out = act + delta
            safety.check_finite(
                out,
                f"the steered activations of '{part.entry.label}' at layer {part.layer}",
                "lower the coefficient (or load the model in float32)",
            )
            return out

        return fn

    def _resolve(self, width: int) -> _Layout:
        pad = self._pad if self._pad is not None else torch.zeros(1, dtype=torch.long)
        lengths = self._lengths if self._lengths is not None else width - pad
        if (
            bool((pad < 0).any())
            or bool((lengths < 0).any())
            or bool((pad + lengths > width).any())
        ):
            raise WorkbenchError(
                f"pad offsets {pad.tolist()} and prompt lengths {lengths.tolist()} do not fit a "
                f"prompt of {width} positions"
            )
        layout = _Layout(pad=pad, lengths=lengths, width=width)
        self._note_clipping(layout)
        return layout

    def _note_ratio(self, part: _Part, act: torch.Tensor) -> None:
        """Note (and log) an added vector over 100x the residual norm it is added to: the
        norm recorded in the vector for that layer, else the median of this batch's rows."""
        if part.added == 0:
            return
        residual = part.entry.vector.layer_norms.get(part.layer)
        if residual is None or part.entry.vector.site == "z":
            residual = safety.median_norm(act)
        where = f"for '{part.entry.label}' at layer {part.layer}"
        msg = safety.residual_ratio_note(part.added, residual, part.shown, where)
        if msg is not None and msg not in self.notes:
            self.notes.append(msg)

    def _note_clipping(self, layout: _Layout) -> None:
        for part in self._parts:
            if part.entry.position == "all":
                continue
            short = sorted({int(x) for x in layout.lengths.tolist() if x < part.n})
            if short:
                msg = (
                    f"vector '{part.entry.label}' has {part.n} positions but the prompt has "
                    f"{'/'.join(map(str, short))} tokens; only the rows that fit were added "
                    f"(position {part.entry.position}, layer {part.layer})"
                )
                if msg not in self.notes:
                    self.notes.append(msg)
                    log.info(msg)


def _as_long(x: Sequence[int] | torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    t = torch.as_tensor(x, dtype=torch.long).flatten().cpu()  # (batch,)
    if len(t) == 0:
        raise WorkbenchError("pad offsets / prompt lengths are empty; give one per batch row")
    return t


def _build_part(entry: PlanEntry, layer: int, dtype: torch.dtype, device: torch.device) -> _Part:
    t = entry.tensor_at(layer)
    z = entry.vector.site == "z"
    rows = t.unsqueeze(0) if (z or t.dim() == 1) else t  # (n, *feat)
    feat = rows.shape[1:]
    direction = rows.mean(0) if rows.shape[0] > 1 else rows[0]  # (*feat)
    coeff = torch.tensor(entry.raw_coeffs(layer), dtype=torch.float32)  # (coeff_rows,)
    coeff = coeff.view(-1, 1, *[1] * len(feat)).to(device=device, dtype=dtype)
    direction = direction.to(device=device, dtype=dtype)
    rows = rows.to(device=device, dtype=dtype)
    raw = entry.raw_coeffs(layer)
    added, _, i = safety.largest_addition(t, raw)
    shown = entry.coeff if isinstance(entry.coeff, list) else [entry.coeff]
    return _Part(
        entry=entry,
        layer=layer,
        rows_ext=torch.cat([rows, torch.zeros_like(rows[:1])]),  # (n + 1, *feat)
        const=coeff * direction,  # (coeff_rows, 1, *feat)
        coeff=coeff,
        added=added,
        shown=shown[i] if len(shown) == len(raw) else shown[0],
    )


def window_start(position: str, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Real position of the vector's first row in each row's prompt (may be negative)."""
    if position == "front":
        return torch.zeros_like(lengths)
    if position == "back":
        return lengths - n
    return torch.div(lengths - n, 2, rounding_mode="floor")  # middle


def _delta(part: _Part, lay: _Layout, start: int, seq_len: int) -> torch.Tensor | None:
    """What ``part`` adds to columns ``[start, start + seq_len)``, or None for nothing."""
    e = part.entry
    if start >= lay.width:  # generated tokens only: the common cached step, kept cheap
        return part.const if (e.position == "all" and e.generated) else None
    cols = torch.arange(start, start + seq_len)  # (pos,)
    real = cols[None, :] - lay.pad[:, None]  # (batch, pos) position within the prompt
    in_prompt = (real >= 0) & (real < lay.lengths[:, None])  # (batch, pos)
    feat_dims = part.const.dim() - 2
    if e.position == "all":
        mask = in_prompt | (cols >= lay.width)[None, :] if e.generated else in_prompt
        if bool(mask.all()):
            return part.const
        if not bool(mask.any()):
            return None
        mask = mask.view(*mask.shape, *[1] * feat_dims).to(part.const.device)
        return torch.where(mask, part.const, torch.zeros_like(part.const))  # (batch, pos, *feat)
    j = real - window_start(str(e.position), lay.lengths, part.n)[:, None]  # (batch, pos)
    valid = in_prompt & (j >= 0) & (j < part.n)
    if not bool(valid.any()):
        return None
    idx = torch.where(valid, j, part.n).to(part.rows_ext.device)  # (batch, pos); n = zero row
    return part.rows_ext[idx] * part.coeff  # (batch, pos, *feat)


@contextlib.contextmanager
def apply_plan(
    model: Model,
    plan: SteeringPlan,
    *,
    backend: str | None = None,
    pad_offsets: Sequence[int] | torch.Tensor | None = None,
    prompt_lengths: Sequence[int] | torch.Tensor | None = None,
) -> Iterator[PlanRun]:
    """Apply ``plan`` to ``model`` inside the block; every hook is removed on exit or error.

    Args:
        backend: ``"hf"`` or ``"tl"`` (default: :func:`workbench.model.hooks.default_backend`).
        pad_offsets: per batch row, the first real column (left padding); default all 0.
        prompt_lengths: per batch row, the real prompt tokens; default: the first call's width
            minus the pad offset.

    Example:
        >>> plan = SteeringPlan.of(love_minus_hate, 5.0)               # doctest: +SKIP
        >>> with apply_plan(model, plan, backend="tl"):                 # doctest: +SKIP
        ...     logits = model.tl(model.encode(["I hate you because"])[0])
    """
    backend = backend or default_backend(model)
    plan.check(model)
    run = PlanRun(
        model, plan, backend=backend, pad_offsets=pad_offsets, prompt_lengths=prompt_lengths
    )
    with hooks_applied(model, run.hooks(), backend=backend):
        yield run
