"""Page: learn steering vectors without labels (MELBO, Jacobian) and rank them as candidates."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import candidates, history, results, state
from app.widgets import blocked, how_to_read, layer_field, progress_sink, why_disabled
from dictionaries.progress import reporting
from workbench.decompose.discover import Discovery
from workbench.decompose.learned import INSTRUCTIONS, MEASURES
from workbench.decompose.trials import TrialSettings
from workbench.decompose.unsupervised import (
    DEFAULT_MEASURE,
    DEFAULT_RADIUS,
    MAX_PROMPTS,
    METHODS,
    default_target,
)

FOUND = "learn_found"  # session: the latest Discovery of this page
RUNS = "learn_runs"
ITERATIONS = {"melbo": 100, "jacobian": 20}

st.title("Learn vectors without labels")
how_to_read(
    "Finds the directions at a source layer that most move a later layer (MELBO: trained "
    "vectors of fixed norm R, kept orthogonal; Jacobian: the top singular directions of the "
    "linearised map), on a set of prompts and with no labels. Each is then treated like a "
    "component: both signs calibrated to the damage budget, measured against random "
    "directions, labelled by the words its completions gain. Moving the target layer is not "
    "the same as a useful behaviour: read the completions."
)
model = state.require_model()

c1, c2, c3, c4 = st.columns(4)
method = c1.selectbox(
    "Method",
    METHODS,
    key="learn_method",
    help="melbo: Adam on K vectors of norm R, trained as one batch; jacobian: block power "
    "iteration on the source-to-target Jacobian (cheaper, linear)",
)
source = layer_field(
    "Source layer",
    "learn_source",
    model.n_layers,
    min(6, model.n_layers - 2),
    where=c2,
    help="the vectors are added at resid_pre of this layer (the input of its block)",
)
target = layer_field(
    "Target layer",
    "learn_target",
    model.n_layers,
    default_target(model, min(6, model.n_layers - 2)),
    where=c3,
    help="the layer whose resid_pre the vectors should move most",
)
k = int(
    c4.number_input(
        "Vectors (K)", 1, model.d_model, 4, key="learn_k", help="how many orthogonal directions"
    )
)
d1, d2, d3, d4 = st.columns(4)
radius = float(
    d1.number_input(
        "Radius R (x resid norm)",
        min_value=0.001,
        max_value=64.0,
        value=DEFAULT_RADIUS,
        step=0.05,
        format="%.3f",
        key="learn_radius",
        help="the vectors' norm while training, in units of the source layer's mean residual "
        "norm; MELBO's main knob (the README has the measured sweep). For the Jacobian it only "
        "sets the radius its objective is reported at",
    )
)
iterations = int(
    d2.number_input(
        "Iterations",
        1,
        1000,
        ITERATIONS[method],
        key=f"learn_iterations_{method}",
        help="Adam steps (melbo) or power iterations (jacobian)",
    )
)
measure = d3.selectbox(
    "Displacement",
    MEASURES,
    index=MEASURES.index(DEFAULT_MEASURE),
    key="learn_measure",
    help="raw: the norm of the change at the target layer (MELBO's objective); direction: the "
    "change of each position's direction, so one exploding position cannot dominate",
)
seed = int(d4.number_input("Seed", 0, 2**31 - 1, 0, key="learn_seed"))
e1, e2 = st.columns([3, 1])
custom = e1.text_area(
    "Prompts (one per line; empty: the built-in instructions)",
    "",
    key="learn_prompts",
    height=100,
    help=f"the vectors train on the first {MAX_PROMPTS} of these (12 of the "
    f"{len(INSTRUCTIONS)} built-in instructions when empty: varied requests, e.g. "
    + "; ".join(INSTRUCTIONS[:3])
    + ")",
)
budget = float(
    e2.number_input(
        "Damage budget (x perplexity)",
        1.01,
        10.0,
        TrialSettings().damage_budget,
        0.05,
        key="learn_budget",
        help="each candidate gets the largest coefficient keeping held-out perplexity under "
        "this ratio",
    )
)
prompts = tuple(line.strip() for line in custom.splitlines() if line.strip()) or None

reason = blocked(
    [
        "type a valid source layer" if source is None else None,
        "type a valid target layer" if target is None else None,
        f"the source layer ({source}) must come before the target layer ({target})"
        if source is not None and target is not None and source >= target
        else None,
    ]
)


def _learn() -> dict[str, Any]:
    assert source is not None and target is not None
    with reporting(progress_sink(progress), first=2.0, every=2.0):
        found = results.learned_discovery(
            model.name,
            str(method),
            source,
            target,
            k,
            radius,
            iterations,
            str(measure),
            prompts,
            seed,
            budget,
        )
    return {"found": found}


def _summary(d: dict[str, Any]) -> list[str]:
    found: Discovery = d["found"]
    moved = found.extra["learned"]["displacement_vs_random"]
    lo, hi = moved["ratio_ci"]
    return [
        f"{len(found.candidates)} candidates; they move the target layer {moved['ratio']:.3g}x "
        f"as much as random directions ({lo:.3g}-{hi:.3g})",
        f"top: {found.candidates[0].label}" if found.candidates else "",
    ]


if st.button("Learn and rank", type="primary", key="learn_run", disabled=reason is not None):
    progress = st.empty()
    with st.spinner(f"Learning {k} {method} vectors, then calibrating both signs of each…"):
        ran = history.run(
            RUNS,
            model,
            f"{method} K={k}, layer {source} -> {target}, R={radius:g}, {measure}",
            _learn,
            _summary,
        )
    progress.empty()
    if ran is not None:
        st.session_state[FOUND] = ran["found"]
why_disabled(reason)

found: Discovery | None = st.session_state.get(FOUND)
if found is not None and found.model == model.name:
    info = found.extra["learned"]
    moved = info["displacement_vs_random"]
    lo, hi = moved["ratio_ci"]
    st.subheader(
        f"{info['method']}: {found.k} directions at layer {info['source_layer']}, moving layer "
        f"{info['target_layer']}"
    )
    m1, m2, m3 = st.columns(3)
    m1.metric(
        "Moves the target layer (x random)",
        f"{moved['ratio']:.3g}x",
        help="mean displacement of the target layer by the learned directions over that of "
        f"{moved['n_random']} random directions of the same norm, on the training prompts",
    )
    m2.metric(
        "95% interval over prompts",
        f"{lo:.3g}-{hi:.3g}x",
        help="bootstrap over the training prompts; an interval reaching 1 means no better than "
        "random",
    )
    m3.metric("Training time", f"{info['seconds']:.0f} s")
    st.caption(
        f"R = {info['radius']:g} x the source layer's mean residual norm, displacement measured "
        f"as {info.get('measure', 'raw')}, {info['n_prompts']} prompts, seed {info['seed']}. "
        "Per direction (x random): "
        + ", ".join(f"{x:.3g}" for x in moved["per_vector"])
        + ". A huge ratio with broken completions is the model's massive-activation "
        "directions, not a behaviour."
    )
    candidates.show(found, key="learn")
elif found is not None:
    st.info(f"The last learned vectors belong to {found.model}; learn again for {model.name}.")

history.show(RUNS)
