"""The steering vector: per-layer directions plus everything needed to apply them safely.

A :class:`SteeringVector` maps layer -> tensor. The tensor at a layer is

* ``(d_model,)``: one direction added at the chosen positions (mean-difference, probe, PCA, ...);
* ``(pos, d_model)``: rows aligned to prompt positions (ActAdd prompt pairs), added to a window
  of the residual stream (front, middle or back of the prompt);
* ``(n_heads, d_head)``: for site ``z`` (ITI), a shift for each attention head's output; rows of
  heads that are not steered are zero.

Vectors are saved as one safetensors file whose header holds JSON metadata (model, site, layer
norms, recipe, checksum), and loading checks all of it: a vector is never silently applied to a
model, width or site it was not made for.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.io import load_tensors, save_tensors
from workbench.model.hooks import SITE_KINDS

FORMAT = "workbench.steering_vector/1"
UNITS = ("raw", "norm")
MAX_META_DEPTH = 64  # saved recipes nest a few levels (arithmetic of arithmetic ...); far below


@dataclass
class SteeringVector:
    """Per-layer steering directions and their provenance.

    Attributes:
        directions: layer -> tensor (see module docstring for shapes), float32.
        model: name of the model the vector was made on.
        d_model: residual width of that model.
        site: hook site kind the vector is meant for (``resid_pre`` by default, as ActAdd).
        method: how it was made (``prompt_pair``, ``mean_diff``, ``probe``, ``component``,
            ``sae_feature``, ``random``, ``iti``, ``arithmetic``, ...).
        recipe: inputs needed to rebuild it (prompts, files, positions, seed); lets sweeps
            rebuild the vector at another layer.
        layer_norms: mean residual-stream norm at each layer when the vector was made, so a
            coefficient can be given in residual-norm units.
        info: anything else worth keeping (probe accuracy, per-head accuracy table, label).
    """

    directions: dict[int, torch.Tensor]
    model: str
    d_model: int
    site: str = "resid_pre"
    method: str = "custom"
    recipe: dict[str, Any] = field(default_factory=dict)
    layer_norms: dict[int, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise WorkbenchError("a steering vector needs at least one layer")
        if self.site not in SITE_KINDS:
            raise WorkbenchError(
                f"vector site {self.site!r} is unknown: use one of {', '.join(SITE_KINDS)}"
            )
        clean: dict[int, torch.Tensor] = {}
        for layer, t in self.directions.items():
            t = torch.as_tensor(t).detach().to(torch.float32).cpu()
            if t.dim() not in (1, 2) or t.numel() == 0:
                raise WorkbenchError(
                    f"vector at layer {layer} has shape {tuple(t.shape)}; expected (d_model,), "
                    "(positions, d_model) or (heads, d_head) with at least one entry"
                )
            if self.site != "z" and t.shape[-1] != self.d_model:
                raise WorkbenchError(
                    f"vector at layer {layer} has width {t.shape[-1]}, expected d_model "
                    f"{self.d_model} for {self.model}"
                )
            if not torch.isfinite(t).all():
                raise WorkbenchError(
                    f"vector at layer {layer} has non-finite entries (NaN or inf); rebuild it"
                )
            clean[int(layer)] = t
        self.directions = dict(sorted(clean.items()))
        self.layer_norms = {int(k): float(v) for k, v in self.layer_norms.items()}

    # ------------------------------------------------------------------ properties

    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def aligned(self) -> bool:
        """True for prompt-aligned vectors (rows per position), as ActAdd makes."""
        return self.site != "z" and any(t.dim() == 2 for t in self.directions.values())

    def norm(self, layer: int) -> float:
        """L2 norm of the vector at ``layer`` (for aligned vectors, of the largest row)."""
        t = self.directions[layer]
        if t.dim() == 2 and self.site != "z":
            return float(t.norm(dim=-1).max())
        return float(t.norm())

    def raw_coefficient(self, coeff: float, layer: int, units: str = "raw") -> float:
        """Turn a coefficient into the multiplier applied to the stored direction.

        ``units="raw"`` multiplies the stored tensor as it is. ``units="norm"`` means the added
        vector's norm equals ``coeff`` times the layer's mean residual-stream norm.
        """
        if units not in UNITS:
            raise WorkbenchError(f"unknown coefficient units '{units}': use raw or norm")
        if not math.isfinite(coeff):
            raise WorkbenchError(f"coefficient {coeff} is not a finite number")
        if units == "raw":
            return float(coeff)
        if layer not in self.layer_norms:
            raise WorkbenchError(
                f"vector has no residual norm recorded for layer {layer}; give the coefficient "
                "in raw units or rebuild the vector with the workbench"
            )
        n = self.norm(layer)
        if n == 0:
            raise WorkbenchError(f"vector at layer {layer} is zero; cannot scale it to a norm")
        return float(coeff) * self.layer_norms[layer] / n

    # ------------------------------------------------------------------ arithmetic

    def _check_same_space(self, other: SteeringVector) -> None:
        if (self.model, self.d_model, self.site) != (other.model, other.d_model, other.site):
            raise WorkbenchError(
                f"cannot combine a vector for {self.model} (d_model {self.d_model}, site "
                f"{self.site}) with one for {other.model} (d_model {other.d_model}, site "
                f"{other.site})"
            )

    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        self._check_same_space(other)
        out: dict[int, torch.Tensor] = {k: v.clone() for k, v in self.directions.items()}
        for layer, t in other.directions.items():
            out[layer] = _add_aligned(out[layer], sign * t) if layer in out else sign * t
        return replace(
            self,
            directions=out,
            method="arithmetic",
            recipe={"op": "+" if sign > 0 else "-", "a": self.describe(), "b": other.describe()},
            layer_norms={**other.layer_norms, **self.layer_norms},
            info={},
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, c: float) -> SteeringVector:
        if not math.isfinite(float(c)):
            raise WorkbenchError(f"coefficient {c} is not a finite number")
        return replace(
            self,
            directions={k: float(c) * v for k, v in self.directions.items()},
            recipe={"op": "*", "c": float(c), "a": self.describe()},
            method="arithmetic",
        )

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def normalized(self) -> SteeringVector:
        """Unit L2 norm at every layer (aligned vectors: every non-zero row)."""
        out = {}
        for layer, t in self.directions.items():
            if t.dim() == 2 and self.site != "z":
                norms = t.norm(dim=-1, keepdim=True)  # (pos, 1)
                out[layer] = torch.where(norms > 0, t / norms.clamp_min(1e-12), t)
            else:
                n = t.norm()
                if n == 0:
                    raise WorkbenchError(f"cannot normalise: vector at layer {layer} is zero")
                out[layer] = t / n
        return replace(self, directions=out)

    def orthogonalized(self, other: SteeringVector) -> SteeringVector:
        """Remove, at each shared layer, the component along ``other`` (flattened)."""
        self._check_same_space(other)
        out = {}
        for layer, t in self.directions.items():
            if layer not in other.directions:
                out[layer] = t
                continue
            u = other.directions[layer]
            if u.shape != t.shape:
                u = u.mean(0) if u.dim() == 2 and t.dim() == 1 else u
            if u.shape != t.shape:
                raise WorkbenchError(
                    f"cannot orthogonalise shapes {tuple(t.shape)} and {tuple(u.shape)} "
                    f"at layer {layer}"
                )
            uu = float((u * u).sum())
            out[layer] = t if uu == 0 else t - (float((t * u).sum()) / uu) * u
        return replace(self, directions=out, info={**self.info, "orthogonalized": True})

    def at_layers(self, layers: list[int]) -> SteeringVector:
        """The same vector restricted to ``layers`` (each must exist)."""
        missing = [x for x in layers if x not in self.directions]
        if missing:
            raise WorkbenchError(f"vector has no layer {missing}; it has layers {self.layers}")
        return replace(self, directions={x: self.directions[x] for x in layers})

    def moved_to(self, layer: int) -> SteeringVector:
        """The (single-layer) vector's tensor applied at another layer (no rebuild)."""
        if len(self.directions) != 1:
            raise WorkbenchError("only a single-layer vector can be moved to another layer")
        (t,) = self.directions.values()
        return replace(self, directions={layer: t})

    # ------------------------------------------------------------------ compatibility

    def check_compatible(self, model_name: str, d_model: int, site: str | None = None) -> None:
        """Refuse a model of another name or width, or another site, naming both."""
        if self.model != model_name or self.d_model != d_model:
            raise WorkbenchError(
                f"vector was made for {self.model} (d_model {self.d_model}) but the model is "
                f"{model_name} (d_model {d_model}); rebuild it on this model"
            )
        if site is not None and site != self.site:
            raise WorkbenchError(
                f"vector was made for site {self.site} but is applied at {site}; "
                "rebuild it at that site"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "site": self.site,
            "method": self.method,
            "layers": self.layers,
            "shapes": {str(k): list(v.shape) for k, v in self.directions.items()},
            "norms": {str(k): round(self.norm(k), 6) for k in self.layers},
        }

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file with JSON metadata (atomically)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = Path(f"{path}.safetensors")
        tensors = {f"layer.{k}": v for k, v in self.directions.items()}
        meta = {
            "format": FORMAT,
            "model": self.model,
            "d_model": self.d_model,
            "site": self.site,
            "method": self.method,
            "recipe": self.recipe,
            "layer_norms": {str(k): v for k, v in self.layer_norms.items()},
            "coefficient_units": "coefficient multiplies the stored tensor (raw), or, in norm "
            "units, sets the added norm to coeff x layer_norms[layer]",
            "info": self.info,
            "checksum": _checksum(tensors),
        }
        save_tensors(path, tensors, meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Load and verify a vector saved by :meth:`save`."""
        try:
            tensors, meta = load_tensors(path, what="vector file")
        except RecursionError:
            raise WorkbenchError(
                f"vector file {path} has metadata nested too deeply to read; recreate it"
            ) from None
        if _depth(meta) > MAX_META_DEPTH:
            raise WorkbenchError(
                f"vector file {path} has metadata nested over {MAX_META_DEPTH} levels; recreate it"
            )
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise WorkbenchError(f"{path} is not a workbench steering vector (format {found!r})")
        if _checksum(tensors) != meta.get("checksum"):
            raise WorkbenchError(f"vector file {path} failed its checksum; it is corrupt")
        fields = _read_metadata(meta, f"vector file {path}")
        directions: dict[int, torch.Tensor] = {}
        for key, t in tensors.items():
            _, dot, layer = key.partition(".")
            if not (dot and key.startswith("layer.") and layer.isascii() and layer.isdigit()):
                raise WorkbenchError(
                    f"vector file {path} holds tensor {key!r}, not layer.N: recreate the vector"
                )
            directions[int(layer)] = t
        return cls(directions=directions, **fields)


def _float_or_none(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:  # an integer too large for a float
        return None


def _depth(obj: Any) -> int:
    """Nesting depth of JSON data, counted without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(item, dict):
            stack.extend((x, d + 1) for x in item.values())
        elif isinstance(item, list):
            stack.extend((x, d + 1) for x in item)
    return deepest


def _read_metadata(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The constructor fields in a saved vector's metadata, each checked for its JSON type."""

    def field_of(key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in meta and default is not None:
            return default
        if key not in meta:
            raise WorkbenchError(f"{where} has incomplete metadata (no {key!r}); recreate it")
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            want = {dict: "an object", str: "a string", int: "a whole number"}.get(
                kind if isinstance(kind, type) else int, "a value"
            )
            raise WorkbenchError(
                f"{where} has {key!r} = {str(value)[:40]!r}, not {want}; recreate the vector"
            )
        return value

    d_model = field_of("d_model", int)
    if d_model < 1:
        raise WorkbenchError(f"{where} has d_model {d_model}; recreate the vector")
    norms: dict[int, float] = {}
    for k, v in field_of("layer_norms", dict, {}).items():
        x = _float_or_none(v)
        if not (k.isascii() and k.isdigit()) or x is None or not (math.isfinite(x) and x > 0):
            raise WorkbenchError(
                f"{where} has layer norm {str(k)[:20]!r}: {str(v)[:20]!r}; a layer norm is a "
                "positive number per layer: recreate the vector"
            )
        norms[int(k)] = x
    return {
        "model": field_of("model", str),
        "d_model": d_model,
        "site": field_of("site", str),
        "method": field_of("method", str),
        "recipe": field_of("recipe", dict, {}),
        "layer_norms": norms,
        "info": field_of("info", dict, {}),
    }


def _add_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Add two per-layer tensors; aligned (pos, d) ones are front-aligned, zero-padded."""
    if a.shape == b.shape:
        return a + b
    if a.dim() == 1 and b.dim() == 1:
        raise WorkbenchError(f"cannot add vectors of shapes {tuple(a.shape)}, {tuple(b.shape)}")
    a2 = a if a.dim() == 2 else a.unsqueeze(0)  # (pos_a, d)
    b2 = b if b.dim() == 2 else b.unsqueeze(0)  # (pos_b, d)
    if a.dim() == 1 or b.dim() == 1:
        # A single direction added to an aligned vector applies to each of its rows.
        return a2 + b2
    n = max(a2.shape[0], b2.shape[0])
    out = torch.zeros(n, a2.shape[1])  # (pos, d)
    out[: a2.shape[0]] += a2
    out[: b2.shape[0]] += b2
    return out


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()
