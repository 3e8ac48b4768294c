"""Cached library calls: each function is one call into the workbench, cached by its arguments.

Models and dictionaries are resources (kept as objects, never copied); everything else is data
(copied out of the cache on each hit, so a page cannot mutate a cached result). Vectors, plans
and dictionaries are hashed by content through :data:`app.state.HASH_FUNCS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

import dictionaries
from app.measure_inputs import MeasureOptions, measure_spec
from app.state import HASH_FUNCS, get_model
from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.corpora import list_builtin
from workbench.decompose import maps
from workbench.decompose.discover import Discovery, discover
from workbench.decompose.fit import evaluate_heldout, fit_from_store, heldout_docs, make_dictionary
from workbench.decompose.hygiene import DEFAULT_MAX_NORM_RATIO, DEFAULT_SCALE, Hygiene
from workbench.decompose.inspect import ComponentReport, inspect_components
from workbench.decompose.maps import Map2D
from workbench.decompose.trials import TrialSettings
from workbench.decompose.unsupervised import discover_unsupervised
from workbench.experiments.compose import ComposeItem, run_compose
from workbench.experiments.overshoot import OvershootThresholds
from workbench.experiments.sweep import SweepConfig, parse_coeffs, run_sweep
from workbench.measure.effects import Targets, default_effect, parse_words, target_set
from workbench.measure.token_effects import TokenEffects, token_logprob_changes
from workbench.model.load import list_models
from workbench.parse import parse_params
from workbench.steer.generate import generate_with_coefficients, side_by_side
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.build import from_component, from_datasets, from_prompts, random_like
from workbench.vectors.vector import SteeringVector


def _dictionary_key(d: Dictionary) -> str:
    import hashlib

    import numpy as np

    h = hashlib.sha256(np.ascontiguousarray(d.components_).tobytes())
    h.update(repr((d.method, d.info_.to_dict())).encode())
    return h.hexdigest()


# Streamlit matches hash functions by exact type, so every registered backend is listed.
_HASH: dict[Any, Any] = {
    **HASH_FUNCS,
    **{dictionaries.get(name): _dictionary_key for name in dictionaries.available()},
}


@st.cache_data(show_spinner=False, ttl=60)
def models() -> list[dict[str, Any]]:
    return list_models()


@st.cache_data(show_spinner=False)
def corpora() -> dict[str, str]:
    """Built-in corpus name -> description."""
    return list_builtin()


# --------------------------------------------------------------------------- vectors


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=_HASH)
def vector_from_prompts(model_name: str, pos: str, neg: str, layer: int) -> SteeringVector:
    return from_prompts(get_model(model_name), pos, neg, layers=layer)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=_HASH)
def vector_from_datasets(
    model_name: str, pos: str, neg: str, layer: int, positions: str
) -> SteeringVector:
    return from_datasets(get_model(model_name), pos, neg, layer, positions=positions)


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=_HASH)
def vector_random(vector: SteeringVector, seed: int) -> SteeringVector:
    return random_like(vector, seed=seed)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=_HASH)
def vector_from_file(path: str, mtime: float) -> SteeringVector:
    del mtime  # part of the cache key only: a rewritten file is read again
    return SteeringVector.load(path)


def load_vector(path: str) -> SteeringVector:
    """A saved vector (re-read when the file changes)."""
    from workbench.errors import WorkbenchError

    p = Path(path).expanduser()
    if not p.is_file():
        raise WorkbenchError(f"vector file not found: {p} (check the path)")
    return vector_from_file(str(p), os.path.getmtime(p))


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=_HASH)
def vector_from_component(
    model_name: str, dictionary: Dictionary, index: int, sign: int
) -> SteeringVector:
    return from_component(dictionary, index, sign, model=get_model(model_name))


# --------------------------------------------------------------------------- generation


@st.cache_data(show_spinner=False, max_entries=32, hash_funcs=_HASH)
def steer(model_name: str, plan: SteeringPlan, prompt: str, **options: Any) -> dict[str, Any]:
    return side_by_side(get_model(model_name), prompt, plan, **options)


@st.cache_data(show_spinner=False, max_entries=32, hash_funcs=_HASH)
def token_effects(model_name: str, plan: SteeringPlan, text: str) -> TokenEffects:
    return token_logprob_changes(get_model(model_name), text, plan)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=_HASH)
def samples_by_coefficient(
    model_name: str, entry: PlanEntry, prompt: str, coeffs: list[float], **options: Any
) -> list[list[str]]:
    return generate_with_coefficients(get_model(model_name), prompt, entry, coeffs, **options)


# --------------------------------------------------------------------------- dictionaries


def store_stamp(path: str) -> float:
    """Changes whenever the store at ``path`` is rewritten (a cache key for its results)."""
    manifest = Path(path) / "manifest.json"
    return os.path.getmtime(manifest) if manifest.exists() else 0.0


@st.cache_resource(show_spinner=False, max_entries=8)
def fit_dictionary(
    store_path: str,
    stamp: float,
    layer: int,
    method: str,
    k: int,
    params: str,
    max_norm_ratio: float = DEFAULT_MAX_NORM_RATIO,
    scale: str = DEFAULT_SCALE,
) -> Dictionary:
    """``workbench decompose``'s fit: ``method`` with ``k`` components and ``params``
    (``"key=value, ..."``) on the store's layer, its held-out documents left out, after the
    input hygiene of ``--max-norm-ratio`` (0: keep every row) and ``--scale``."""
    del stamp  # cache key only
    store = ActivationStore.open(store_path)
    store.check_layer(layer)
    items = [p.strip() for p in params.split(",") if p.strip()]
    dictionary = make_dictionary(method, k, parse_params(items))
    hygiene = Hygiene(max_norm_ratio=max_norm_ratio or None, scale=scale)
    return fit_from_store(
        dictionary, store, layer, exclude_docs=heldout_docs(store), hygiene=hygiene
    )


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=_HASH)
def quality(
    model_name: str, dictionary: Dictionary, store_path: str, stamp: float, layer: int
) -> dict[str, Any]:
    """``workbench decompose``'s report: held-out reconstruction and spliced next-token loss."""
    del stamp
    store = ActivationStore.open(store_path)
    return evaluate_heldout(
        dictionary, store, layer, heldout_docs(store), model=get_model(model_name), n_texts=8
    )


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=_HASH)
def component_reports(
    model_name: str,
    dictionary: Dictionary,
    store_path: str,
    stamp: float,
    layer: int,
    indices: tuple[int, ...],
    lens_rank: str = "cosine",
) -> list[ComponentReport]:
    del stamp
    store = ActivationStore.open(store_path)
    return inspect_components(
        dictionary,
        store,
        layer=layer,
        indices=list(indices),
        model=get_model(model_name),
        top_k=5,
        window=6,
        bins=30,
        lens_k=8,
        lens_rank=lens_rank,
    )


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=_HASH)
def activation_map(
    store_path: str,
    stamp: float,
    layer: int,
    colour_by: str,
    dictionary: Dictionary,
    component: int,
    n: int,
    doc_labels: tuple[str, ...] | None,
) -> Map2D:
    del stamp
    by_component = colour_by == "component"
    return maps.activation_map(
        ActivationStore.open(store_path),
        layer,
        colour_by=colour_by,
        doc_labels=doc_labels,
        dictionary=dictionary if by_component else None,
        component=component if by_component else None,
        n=n,
    )


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=_HASH)
def discovery(
    model_name: str,
    dictionary: Dictionary,
    store_path: str,
    stamp: float,
    layer: int,
    damage_budget: float,
    rank_by: str,
) -> Discovery:
    """``workbench discover``'s calibration and ranking, on the page's fitted dictionary."""
    del stamp
    return discover(
        get_model(model_name),
        dictionary,
        ActivationStore.open(store_path),
        layer=layer,
        settings=TrialSettings(damage_budget=damage_budget),
        rank_by=rank_by,
    )


@st.cache_data(show_spinner=False, max_entries=8)
def learned_discovery(
    model_name: str,
    method: str,
    source: int,
    target: int,
    k: int,
    radius: float,
    iterations: int,
    measure: str,
    prompts: tuple[str, ...] | None,
    seed: int,
    damage_budget: float,
) -> Discovery:
    """``workbench discover --method melbo|jacobian``: learn, calibrate, label and rank.

    ``prompts`` ``None`` trains on the built-in instructions.
    """
    return discover_unsupervised(
        get_model(model_name),
        method,
        source=source,
        target=target,
        k=k,
        radius=radius,
        iterations=iterations,
        measure=measure,
        prompts=None if prompts is None else list(prompts),
        seed=seed,
        settings=TrialSettings(damage_budget=damage_budget),
    )


# --------------------------------------------------------------------------- measurement


def _targets(model_name: str, words: str, name: str) -> list[Targets]:
    return [target_set(get_model(model_name), parse_words(words), name)] if words.strip() else []


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=_HASH)
def sweep(
    model_name: str,
    vector: SteeringVector,
    label: str,
    coeffs: str,
    layer: int,
    units: str,
    position: str | None,
    opts: MeasureOptions,
    effect_kind: str,
    words: str,
    decrease: bool,
    thresholds: tuple[float, float],
) -> dict[str, Any]:
    """``workbench sweep`` at one layer, as the CLI runs it."""
    model = get_model(model_name)
    spec = measure_spec(
        opts, _targets(model_name, words, "target"), sentiment=effect_kind == "sentiment"
    )
    config = SweepConfig(
        coeffs=parse_coeffs(coeffs),
        layers=[layer],
        units=units,
        position=position,
        thresholds=OvershootThresholds(*thresholds),
        controls=opts.controls,
    )
    effect = default_effect(spec, effect_kind, decrease)
    return run_sweep(model, vector, config, spec, effect, label=label)


ComposeRow = tuple[str, SteeringVector, int, float, str, str]  # label, vector, layer, coeff,
# metric ("sentiment" or "target words"), words


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=_HASH)
def compose(
    model_name: str,
    rows: tuple[ComposeRow, ...],
    units: str,
    orthogonalize: bool,
    sampled: bool,
    opts: MeasureOptions,
) -> dict[str, Any]:
    """``workbench compose`` over the plan's rows, as the CLI runs it."""
    items, targets = [], []
    for label, vector, layer, coeff, metric, words in rows:
        t = _targets(model_name, words, label) if metric == "target words" else []
        targets += t
        items.append(
            ComposeItem(
                vector,
                coeff,
                layer,
                label,
                targets=t[0] if t else None,
                score="sentiment" if metric == "sentiment" else None,
            )
        )
    sentiment = any(it.score == "sentiment" for it in items)
    spec = measure_spec(opts, targets, sentiment=sentiment)
    return run_compose(
        get_model(model_name),
        items,
        spec,
        units=units,
        orthogonalize=orthogonalize,
        sampled=sampled,
        controls=opts.controls,
    )
