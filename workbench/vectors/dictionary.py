"""Vectors from learned dictionaries: a decomposition component, an SAE feature's decoder row.

A dictionary (PCA, ICA, dictionary learning, SAE; see :mod:`dictionaries`) is fitted on
activations of one model at one site and layer, which its ``info_`` records. The vector inherits
them; a dictionary made on another model or width than the one asked for is refused, naming both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError, check
from workbench.model.hooks import Site
from workbench.model.load import Model, load_model
from workbench.vectors.assemble import assemble
from workbench.vectors.vector import SteeringVector


def _load_dictionary(source: Any) -> tuple[Any, str | None]:
    if isinstance(source, (str, os.PathLike)):
        import dictionaries

        return dictionaries.load(source), str(source)
    check(
        hasattr(source, "components_"),
        f"{type(source).__name__} is not a fitted dictionary (it has no components_): give a "
        "dictionary folder or a fitted dictionaries.Dictionary",
    )
    return source, None


def _target(
    what: str,
    meta: dict[str, Any],
    width: int,
    model: Model | str | None,
    layer: int | None,
    site: str | None,
) -> tuple[Model, str, int]:
    """Resolve and check the model, site and layer a dictionary direction is used at."""
    known = meta.get("model")
    if model is None:
        check(known is not None, f"the {what} does not record its model: pass the model (--model)")
        model = str(known)
    m = load_model(model) if isinstance(model, str) else model
    check(
        known is None or str(known) == m.name,
        f"the {what} was made on {known} but the model is {m.name}: use a {what} made on "
        f"{m.name}, or load {known}",
    )
    site = site or meta.get("site")
    check(site is not None, f"the {what} does not record its site: pass the site (--site)")
    assert site is not None
    expected = m.n_heads * m.d_head if site == "z" else m.d_model
    check(
        width == expected,
        f"the {what} has width {width} (model {known or 'unknown'}) but {m.name} at site {site} "
        f"has width {expected}: use a {what} made on {m.name}",
    )
    layer = meta.get("layer") if layer is None else layer
    check(layer is not None, f"the {what} does not record its layer: pass the layer (--layer)")
    assert layer is not None
    Site(site, int(layer)).check(m)
    return m, site, int(layer)


def _meta_of(info: Any) -> dict[str, Any]:
    # DictionaryInfo has to_dict(); a plain mapping is accepted for objects built elsewhere.
    if info is None:
        return {}
    return dict(info.to_dict()) if hasattr(info, "to_dict") else dict(info)


def _shape_for(direction: np.ndarray, model: Model, site: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(direction, dtype=np.float32))  # (width,)
    return t.view(model.n_heads, model.d_head) if site == "z" else t


def _check_sign(sign: int) -> None:
    check(sign in (1, -1), f"sign {sign!r} must be +1 or -1")


def from_component(
    dictionary: Any,
    index: int,
    sign: int = 1,
    layer: int | None = None,
    *,
    model: Model | str | None = None,
    site: str | None = None,
) -> SteeringVector:
    """Decoder direction ``index`` of a dictionary (``directions_``, unit norm, in the model's
    space), times ``sign`` (+1 or -1).

    ``dictionary`` is a folder written by ``Dictionary.save`` or a fitted dictionary object. Its
    recorded model, site and layer are used unless given; ``layer`` may move the direction to
    another layer (``info["fitted_layer"]`` keeps the original).

    Example:
        >>> v = from_component("runs/pca-l6", index=3, sign=-1)   # doctest: +SKIP
    """
    _check_sign(sign)
    d, path = _load_dictionary(dictionary)
    # The model-space decoder directions: for a dictionary fitted in a scaled space these differ
    # from components_ (see dictionaries.scaling); adding them is what moves the code.
    comps = np.asarray(getattr(d, "directions_", d.components_))  # (k, width)
    k = comps.shape[0]
    check(
        isinstance(index, int) and 0 <= index < k,
        f"component index {index} is out of range: the dictionary has {k} components (0..{k - 1})",
    )
    meta = _meta_of(getattr(d, "info_", None))
    m, site, layer = _target("dictionary", meta, comps.shape[1], model, layer, site)
    direction = sign * comps[index].astype(np.float64)  # (width,)
    method_name = str(getattr(d, "method", type(d).__name__))
    return assemble(
        m,
        {layer: _shape_for(direction, m, site)},
        site=site,
        method="component",
        recipe={"dictionary": path, "index": index, "sign": sign, "layer": layer, "site": site},
        info={
            "dictionary_method": method_name,
            "n_components": k,
            "index": index,
            "sign": sign,
            "fitted_layer": meta.get("layer"),
            "component_norm": round(float(np.linalg.norm(comps[index])), 6),
        },
    )


def _load_sae(source: Any) -> tuple[Any, dict[str, Any], str | None]:
    """``(sae_lens SAE, {model, site, layer}, path)`` from a folder or an object."""
    path: str | None = None
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        folder = Path(source)
        check(folder.is_dir(), f"SAE folder not found: {folder} (check the path)")
        import dictionaries

        if (folder / "config.json").exists():  # saved by the workbench
            source = dictionaries.load(folder)
        else:  # a SAELens folder (cfg.json + sae_weights.safetensors)
            source = dictionaries.PretrainedSAE.from_folder(folder)
    if hasattr(source, "sae_"):  # a workbench SAE dictionary: its info_ is authoritative
        return source.sae_, source.info_.to_dict(), path
    check(
        hasattr(source, "W_dec"),
        f"{type(source).__name__} is not an SAE (no W_dec): give an SAE folder or a sae_lens SAE",
    )
    from dictionaries import DictionaryInfo

    md = getattr(getattr(source, "cfg", None), "metadata", None)
    hook = getattr(md, "hook_name", None)
    name = getattr(md, "model_name", None)
    return source, DictionaryInfo.from_hook_name(hook, model=name).to_dict(), path


def from_sae_feature(
    sae: Any,
    feature: int,
    layer: int | None = None,
    *,
    model: Model | str | None = None,
    site: str | None = None,
    sign: int = 1,
) -> SteeringVector:
    """An SAE feature's decoder row ``W_dec[feature]`` (its own norm, times ``sign``).

    ``sae`` is a SAELens folder, a workbench SAE dictionary folder, or an SAE object. The model,
    site and layer come from the SAE's metadata (hook name) unless given.

    Example:
        >>> v = from_sae_feature("saes/l6", feature=1234, layer=6, model="smollm2-135m")  # doctest: +SKIP
    """
    _check_sign(sign)
    s, meta, path = _load_sae(sae)
    W_dec = s.W_dec.detach().float().cpu().numpy()  # (d_sae, d_in)
    n = W_dec.shape[0]
    check(
        isinstance(feature, int) and 0 <= feature < n,
        f"SAE feature {feature} is out of range: the SAE has {n} features (0..{n - 1})",
    )
    m, site, layer = _target("SAE", meta, W_dec.shape[1], model, layer, site)
    row = sign * W_dec[feature].astype(np.float64)  # (d_in,)
    if not np.isfinite(row).all():
        raise WorkbenchError(f"SAE feature {feature} has non-finite decoder weights")
    return assemble(
        m,
        {layer: _shape_for(row, m, site)},
        site=site,
        method="sae_feature",
        recipe={"sae": path, "feature": feature, "sign": sign, "layer": layer, "site": site},
        info={
            "d_sae": n,
            "feature": feature,
            "sign": sign,
            "fitted_layer": meta.get("layer"),
            "decoder_norm": round(float(np.linalg.norm(W_dec[feature])), 6),
        },
    )
