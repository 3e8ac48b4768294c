"""llama.cpp control vectors: export a steering vector to its GGUF format and import one.

llama.cpp (``--control-vector FILE``, ``--control-vector-scaled FILE S``) reads a GGUF whose
``general.architecture`` is ``controlvector``, with one float32 tensor ``direction.N`` of
``n_embd`` values per steered layer, and adds ``S x direction.N`` to the **output of block N**
(0-based) at every position; ``N >= 1``, so block 0's output cannot be steered. (Its loader puts
``direction.N`` at buffer offset ``(N - 1) x n_embd`` and the applier reads block ``il`` from
offset ``(il - 1) x n_embd``: the two shifts cancel.) repeng writes the same files.

The layer mapping, in this workbench's convention (see :attr:`workbench.model.hooks.Site.convention`):

* our ``resid_post L`` (the output of block L) = llama.cpp ``direction.L``, for ``L >= 1``;
* our ``resid_pre L`` (the input of block L = the output of block L-1) = ``direction.(L-1)``, for
  ``L >= 2``.

Imports are always ``resid_post N`` vectors: exactly where llama.cpp adds them, last block
included. Files are written and read with the ``gguf`` package, never by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError, check
from workbench.io import atomic_path
from workbench.model.load import Model
from workbench.vectors.assemble import assemble
from workbench.vectors.vector import SteeringVector

ARCH = "controlvector"
META_KEY = "workbench.vector"  # our own metadata (llama.cpp ignores unknown keys)
ROWS = ("mean", "last")

# llama.cpp's architecture names for the embedded models (its ``controlvector.model_hint``).
_HINTS = {"smollm2-135m": "llama", "gemma3-270m": "gemma3"}


def llamacpp_layer(site: str, layer: int) -> int:
    """llama.cpp's ``direction.N`` index for our ``site`` at ``layer``, or a one-line error."""
    check(
        site in ("resid_pre", "resid_post"),
        f"llama.cpp adds control vectors to block outputs only; a {site} vector cannot be "
        "exported (build it at resid_pre or resid_post)",
    )
    n = layer - 1 if site == "resid_pre" else layer
    check(
        n >= 1,
        f"llama.cpp cannot steer {'the embeddings' if n < 0 else 'the output of block 0'} "
        f"(our {site} {layer}); use resid_pre 2 or later (= llama.cpp direction.1)",
    )
    return n


def _one_row(t: torch.Tensor, layer: int, row: str | int | None) -> torch.Tensor:
    """A single direction from a per-position (ActAdd) tensor ``(pos, d_model)``."""
    if t.dim() == 1:
        return t
    check(
        row is not None,
        f"the vector at layer {layer} has one row per prompt position ({t.shape[0]}), but "
        "llama.cpp adds one direction at every position: choose --row mean, last or an index",
    )
    if row == "mean":
        live = t[t.norm(dim=-1) > 0]  # (rows, d_model): BOS (zero) excluded
        return live.mean(0) if len(live) else t.mean(0)
    if row == "last":
        return t[-1]
    check(
        isinstance(row, int) and 0 <= row < t.shape[0],
        f"--row {row} is not a row of the vector (0..{t.shape[0] - 1}, mean or last)",
    )
    assert isinstance(row, int)
    return t[row]


def export_control_vector(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    coeff: float | None = None,
    units: str = "raw",
    row: str | int | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write ``vector`` as a llama.cpp control vector (GGUF) at ``path``; return the path.

    ``coeff`` folds a coefficient into the tensors (``units``: ``raw`` or residual-``norm``
    units, per layer); without it the stored tensor is written and llama.cpp's scale is the
    coefficient. ``row`` turns a per-position (ActAdd) vector into one direction: ``mean``
    (of its non-zero rows), ``last`` or a row index. Our own metadata (the vector's
    description, the layer mapping, the folded coefficient) rides along under
    ``workbench.vector``.
    """
    import gguf

    check(vector.site != "z", "head-level (z) vectors cannot be exported to llama.cpp")
    directions: dict[int, np.ndarray] = {}
    mapping: dict[str, str] = {}
    for layer in sorted(vector.directions):
        n = llamacpp_layer(vector.site, layer)
        mapping[str(n)] = f"{vector.site} {layer}"
        t = _one_row(vector.directions[layer], layer, row)
        if coeff is None:
            scale = 1.0
        elif units == "norm":  # the added norm = coeff x the layer's norm (of the chosen row)
            check(layer in vector.layer_norms, f"no residual norm recorded for layer {layer}")
            check(float(t.norm()) > 0, f"the direction at layer {layer} is zero")
            scale = coeff * vector.layer_norms[layer] / float(t.norm())
        else:
            scale = vector.raw_coefficient(coeff, layer, "raw")
        arr = (scale * t).to(torch.float32).numpy()  # (d_model,)
        check(
            bool(np.isfinite(arr).all()), f"the exported direction at layer {layer} is not finite"
        )
        directions[n] = arr
    hint = model_hint or _HINTS.get(vector.model, vector.info.get("architecture", "llama"))
    meta = {
        "vector": vector.describe(),
        "mapping": mapping,
        "coeff_folded": coeff,
        "units": units if coeff is not None else None,
        "row": row,
    }
    final = Path(path)
    with atomic_path(final) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", str(hint))
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string(META_KEY, json.dumps(meta, default=str))
        for n, arr in directions.items():
            writer.add_tensor(f"direction.{n}", arr)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return final


def _field_text(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not len(field.parts):
        return None
    try:
        return bytes(field.parts[-1]).decode("utf-8")
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def read_control_vector(
    path: str | os.PathLike[str],
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """``({N: direction (n_embd,)}, metadata)`` of a llama.cpp control-vector file."""
    import gguf

    p = Path(path)
    check(p.is_file(), f"control vector not found: {p} (check the path)")
    try:
        reader = gguf.GGUFReader(str(p))
    except (ValueError, OSError, KeyError, IndexError) as e:
        raise WorkbenchError(f"{p} is not a readable GGUF file ({e})") from None
    arch = _field_text(reader, "general.architecture")
    check(
        arch == ARCH,
        f"{p} is a GGUF of architecture {arch!r}, not a llama.cpp control vector "
        f"('{ARCH}'); give a file written by `workbench vector export`, repeng or "
        "llama-cvector-generator",
    )
    out: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        name = str(t.name)
        head, _, index = name.partition(".")
        check(
            head == "direction" and index.isdigit(),
            f"{p} holds a tensor {name!r}; a control vector holds only direction.N tensors",
        )
        arr = np.asarray(t.data, dtype=np.float32).reshape(-1)
        check(
            arr.size > 0 and bool(np.isfinite(arr).all()), f"{name} in {p} is empty or not finite"
        )
        out[int(index)] = arr.copy()
    check(bool(out), f"{p} holds no direction.N tensors")
    meta: dict[str, Any] = {"model_hint": _field_text(reader, f"{ARCH}.model_hint")}
    ours = _field_text(reader, META_KEY)
    if ours:
        try:
            meta["workbench"] = json.loads(ours)
        except ValueError:
            meta["workbench"] = None
    return out, meta


def import_control_vector(path: str | os.PathLike[str], model: Model) -> SteeringVector:
    """A llama.cpp control vector as a ``resid_post`` steering vector for ``model``.

    ``direction.N`` becomes our ``resid_post N`` (the output of block N, where llama.cpp adds
    it). A file for another width, or with layers the model lacks, is a one-line error.
    """
    directions, meta = read_control_vector(path)
    widths = sorted({a.size for a in directions.values()})
    check(
        widths == [model.d_model],
        f"{path} is a control vector for width {widths[0] if len(widths) == 1 else widths}, "
        f"but {model.name} has d_model {model.d_model}: use it with its own model",
    )
    bad = [n for n in directions if not 1 <= n < model.n_layers]
    check(
        not bad,
        f"{path} steers llama.cpp layers {sorted(bad)}, which {model.name} lacks (it has "
        f"blocks 0..{model.n_layers - 1}; llama.cpp's direction.N is block N's output, N >= 1)",
    )
    return assemble(
        model,
        {n: torch.from_numpy(a) for n, a in sorted(directions.items())},
        site="resid_post",
        method="llamacpp",
        recipe={"file": str(path), "llamacpp_layers": sorted(directions)},
        info={"imported_from": "llama.cpp control vector", **meta},
    )
