"""Steering plans: which vectors, at which layers and positions, with which coefficients.

A :class:`SteeringPlan` is a list of :class:`PlanEntry`. Each entry adds ``coeff x vector`` at
its layers; where in the sequence is decided by its *position policy*:

* ``front`` / ``middle`` / ``back``: the rows of a prompt-aligned (ActAdd) vector are added to a
  window of prompt positions: ``[0, n)`` (position 0 is BOS), centred in the prompt, or ending at
  the last prompt token. A single direction counts as one row. Windows never reach generated
  tokens, as in ActAdd.
* ``all``: one direction (an aligned vector's mean row) at every prompt position and, when
  ``generated`` is true, at every generated token too.

A coefficient may be a list: row ``i`` of the batch then gets coefficient ``i``, so one forward
pass or one ``generate`` call serves a whole coefficient sweep.

Plans are applied with :func:`workbench.steer.apply.apply_plan`; this module only describes and
validates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from workbench.errors import WorkbenchError, check
from workbench.model.load import Model
from workbench.steer import safety
from workbench.vectors.vector import UNITS, SteeringVector

STEER_POSITIONS = ("front", "middle", "back", "all")
WINDOWS = ("front", "middle", "back")


def _finite(value: Any, what: str = "coefficient") -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise WorkbenchError(f"{what} {value} is not a finite number; give a finite {what}")
    return x


@dataclass
class PlanEntry:
    """One vector of a plan, with its coefficient, layers and position policy.

    Attributes:
        vector: the steering vector.
        coeff: a coefficient, or a list of them (one per batch row).
        layers: layers to apply at (default: the vector's layers). A single-layer vector may be
            given other layers: its tensor is then added there.
        position: ``front`` | ``middle`` | ``back`` | ``all`` (default: ``front`` for aligned
            vectors, ``all`` for single directions).
        generated: also steer generated tokens (only with ``all``; default: true for single
            directions, false for aligned vectors).
        units: ``raw`` (multiply the stored tensor) or ``norm`` (added norm = coeff x the
            layer's mean residual norm recorded in the vector).
        label: a short name for reports (e.g. the vector's file name).
    """

    vector: SteeringVector
    coeff: float | list[float]
    layers: list[int] | None = None
    position: str | None = None
    generated: bool | None = None
    units: str = "raw"
    label: str = ""
    _raw: dict[int, list[float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise WorkbenchError(f"a plan entry needs a SteeringVector, got {type(self.vector)}")
        if isinstance(self.coeff, (list, tuple)):
            check(len(self.coeff) > 0, "the coefficient list is empty; give at least one")
            self.coeff = [_finite(c) for c in self.coeff]
        else:
            self.coeff = _finite(self.coeff)
        if self.units not in UNITS:
            raise WorkbenchError(f"unknown coefficient units '{self.units}': use raw or norm")
        if self.position is None:
            self.position = "front" if self.vector.aligned else "all"
        if self.position not in STEER_POSITIONS:
            raise WorkbenchError(
                f"unknown position '{self.position}': use one of {', '.join(STEER_POSITIONS)}"
            )
        if self.generated is None:
            self.generated = self.position == "all" and not self.vector.aligned
        elif self.generated and self.position != "all":
            raise WorkbenchError(
                f"position '{self.position}' adds to a window of the prompt only; use position "
                "'all' to also steer generated tokens"
            )
        self.layers = self._resolve_layers(self.layers)
        self.label = self.label or self.vector.method
        # Converting now surfaces norm-unit problems (no recorded norm) before any model runs.
        self._raw = {layer: self._convert(layer) for layer in self.layers}

    def _resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        if layers is None:
            return self.vector.layers
        if isinstance(layers, int):
            layers = [layers]
        out = [int(x) for x in layers]
        check(len(out) > 0, "the layer list is empty; give at least one layer or leave it out")
        check(len(set(out)) == len(out), f"layers {out} repeat a layer; give each layer once")
        if len(self.vector.layers) > 1:
            missing = [x for x in out if x not in self.vector.directions]
            if missing:
                raise WorkbenchError(
                    f"vector has no layer {missing}; it has layers {self.vector.layers} (only a "
                    "single-layer vector can be applied at other layers)"
                )
        return out

    def _convert(self, layer: int) -> list[float]:
        vec = self.vector
        if layer not in vec.directions:
            vec = vec.moved_to(layer)
        coeffs = self.coeff if isinstance(self.coeff, list) else [self.coeff]
        return [vec.raw_coefficient(c, layer, self.units) for c in coeffs]

    @property
    def rows(self) -> int | None:
        """Batch rows this entry needs (the length of a coefficient list), or None."""
        return len(self.coeff) if isinstance(self.coeff, list) else None

    def raw_coeffs(self, layer: int) -> list[float]:
        """Multipliers of the stored tensor at ``layer``: one per batch row, or a single one."""
        return self._raw[layer]

    def tensor_at(self, layer: int) -> torch.Tensor:
        """The stored tensor added at ``layer`` (the single tensor of a moved vector)."""
        if layer in self.vector.directions:
            return self.vector.directions[layer]
        return next(iter(self.vector.directions.values()))

    def check(self, model: Model) -> None:
        """Refuse a model of another name/width, layers out of range, wrong head shapes, or a
        coefficient whose added vector the model's dtype cannot hold (:mod:`.safety`)."""
        self.vector.check_compatible(model.name, model.d_model)
        assert self.layers is not None
        dtype = model.dtype
        shown = self.coeff if isinstance(self.coeff, list) else [self.coeff]
        for layer in self.layers:
            model.check_layer(layer)
            t = self.tensor_at(layer)
            if self.vector.site == "z" and tuple(t.shape) != (model.n_heads, model.d_head):
                raise WorkbenchError(
                    f"head vector at layer {layer} has shape {tuple(t.shape)}, but {model.name} "
                    f"has {model.n_heads} heads of size {model.d_head}"
                )
            where = f"for '{self.label}' at layer {layer}"
            safety.check_fits_dtype(t, self.raw_coeffs(layer), shown, dtype, where)

    def with_coeff(self, coeff: float | list[float]) -> PlanEntry:
        """The same entry with another coefficient (or list of them)."""
        return replace(self, coeff=coeff)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "vector": self.vector.describe(),
            "coeff": self.coeff,
            "units": self.units,
            "raw_coeff": {str(k): v if len(v) > 1 else v[0] for k, v in self._raw.items()},
            "layers": self.layers,
            "site": self.vector.site,
            "position": self.position,
            "generated": self.generated,
        }


@dataclass
class SteeringPlan:
    """Several vectors applied together (see module docstring)."""

    entries: list[PlanEntry]

    def __post_init__(self) -> None:
        if isinstance(self.entries, PlanEntry):
            self.entries = [self.entries]
        self.entries = list(self.entries)
        check(len(self.entries) > 0, "a steering plan needs at least one vector")
        for e in self.entries:
            if not isinstance(e, PlanEntry):
                raise WorkbenchError(f"plan entries must be PlanEntry objects, got {type(e)}")
        sizes = {e.rows for e in self.entries if e.rows is not None}
        if len(sizes) > 1:
            raise WorkbenchError(
                f"plan entries have coefficient lists of different lengths {sorted(sizes)}; "
                "give every entry one coefficient per batch row"
            )

    @classmethod
    def of(cls, vector: SteeringVector, coeff: float | list[float], **kwargs: Any) -> SteeringPlan:
        """A one-vector plan; ``kwargs`` go to :class:`PlanEntry`."""
        return cls([PlanEntry(vector, coeff, **kwargs)])

    @property
    def rows(self) -> int | None:
        """Batch rows the plan needs (from coefficient lists), or None if it broadcasts."""
        sizes = [e.rows for e in self.entries if e.rows is not None]
        return sizes[0] if sizes else None

    def check(self, model: Model) -> None:
        """Validate every entry against ``model`` (names, widths, layers, shapes)."""
        for e in self.entries:
            e.check(model)

    def select_rows(self, rows: Sequence[int]) -> SteeringPlan:
        """The plan for a subset of batch rows (coefficient lists are indexed by ``rows``)."""
        out = []
        for e in self.entries:
            if isinstance(e.coeff, list):
                out.append(e.with_coeff([e.coeff[i] for i in rows]))
            else:
                out.append(e)
        return SteeringPlan(out)

    def expand_rows(self, repeat: int) -> SteeringPlan:
        """Each coefficient of a list repeated ``repeat`` times in a row (samples per row)."""
        out = []
        for e in self.entries:
            if isinstance(e.coeff, list):
                out.append(e.with_coeff([c for c in e.coeff for _ in range(repeat)]))
            else:
                out.append(e)
        return SteeringPlan(out)

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]
