"""Page 3: steered and unsteered completions side by side, and a passage coloured by how
steering changes each token's log-probability."""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from app import results, state
from app.paths import save_vector
from app.vector_picker import vector_picker
from app.widgets import attempt, completion_box, preset, token_passage_html
from workbench.steer.plan import STEER_POSITIONS, PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD, Sampling
from workbench.vectors.vector import UNITS

LAST = "steer_last"  # session key: the latest run (plan, vector, label, result)

st.title("Steer")
model = state.require_model()

# --------------------------------------------------------------------------- the vector

st.subheader("Vector")
preset("steer_layer", max(0, model.n_layers // 5))
layer = int(
    st.number_input(
        "Layer",
        min_value=0,
        max_value=model.n_layers - 1,
        key="steer_layer",
        help="where the vector is built and added (residual stream before the block)",
    )
)
sent = st.session_state.get(state.SEND_TO_STEER)
choice = vector_picker(
    model, "steer_vec", layer, default="Kept or discovered" if sent in state.library() else None
)
own_layers = choice.made_at is None and not st.checkbox(
    "Move it to the layer above",
    value=False,
    key="steer_move",
    help="saved and kept vectors are applied at their own layer unless moved",
)

# --------------------------------------------------------------------------- the plan

st.subheader("Coefficient and position")
c1, c2, c3 = st.columns([1, 3, 1])
preset("steer_units", "raw")
preset("steer_coeff_raw", 5.0)
preset("steer_coeff_norm", 1.0)
units = c1.radio(
    "Units",
    UNITS,
    horizontal=True,
    key="steer_units",
    help="raw: multiplies the vector; norm: added norm / the layer's mean norm",
)
if units == "raw":
    coeff = c2.slider("Coefficient", -30.0, 30.0, step=0.5, key="steer_coeff_raw")
else:
    coeff = c2.slider("Coefficient", -4.0, 4.0, step=0.05, key="steer_coeff_norm")
position = c3.selectbox(
    "Position",
    ["default", *STEER_POSITIONS],
    key="steer_position",
    help="front/middle/back: a prompt window (aligned vectors); all: every position",
)

# --------------------------------------------------------------------------- prompt, sampling

st.subheader("Prompt")
prompt = st.text_input("Prompt", value="I hate you because", key="steer_prompt")
c1, c2, c3 = st.columns(3)
n = int(c1.number_input("Samples", 1, 16, state.DEFAULT_SAMPLES, key="steer_n"))
new_tokens = int(
    c2.number_input("New tokens", 1, 256, state.DEFAULT_NEW_TOKENS, key="steer_tokens")
)
seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="steer_seed"))
with st.expander("Sampling (ActAdd's settings by default)"):
    s1, s2, s3 = st.columns(3)
    temperature = s1.number_input(
        "Temperature", 0.0, 5.0, float(ACTADD["temperature"]), 0.1, key="steer_temperature"
    )
    top_p = s2.number_input("Top-p", 0.01, 1.0, float(ACTADD["top_p"]), 0.05, key="steer_top_p")
    freq_penalty = s3.number_input(
        "Frequency penalty", 0.0, 5.0, float(ACTADD["freq_penalty"]), key="steer_freq_penalty"
    )


def run_steer() -> dict[str, Any]:
    """Build the vector and the one-entry plan, and generate both columns (all library)."""
    vector = choice.build()
    entry = PlanEntry(
        vector,
        float(coeff),
        layers=None if own_layers else [layer],
        position=None if position == "default" else position,
        units=units,
        label=choice.label,
    )
    plan = SteeringPlan([entry])
    out = results.steer(
        model.name,
        plan,
        prompt,
        n=n,
        sampling=Sampling(
            max_new_tokens=new_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            freq_penalty=float(freq_penalty),
            seed=seed,
        ),
    )
    return {
        "plan": plan,
        "vector": vector,
        "label": choice.label,
        "result": out,
        "model": model.name,
    }


if st.button("Steer", type="primary", key="steer_go"):
    st.session_state.pop(LAST, None)
    with st.spinner("Generating both columns under the same seeds…"):
        run = attempt(run_steer)
    if run is not None:
        st.session_state[LAST] = run

# --------------------------------------------------------------------------- results

last = st.session_state.get(LAST)
if last and last["model"] == model.name:
    res = last["result"]
    e = res["plan"][0]
    st.caption(
        f"{e['label']} × {e['coeff']} ({e['units']}) at layer "
        f"{','.join(map(str, e['layers']))}, {e['site']}, position {e['position']} · seed "
        f"{res['settings']['seed']}, temperature {res['settings']['temperature']}, top-p "
        f"{res['settings']['top_p']}, frequency penalty {res['settings']['freq_penalty']}"
    )
    for note in res["notes"]:
        st.info(note)
    left, right = st.columns(2)
    with left:
        st.markdown("#### Unsteered")
        for text in res["unsteered"]:
            completion_box(text, prompt=res["prompt"], kind="unsteered")
    with right:
        st.markdown("#### Steered")
        for text in res["steered"]:
            completion_box(text, prompt=res["prompt"], kind="steered")

    st.subheader("Which tokens steering makes more or less likely")
    default_passage = res["prompt"] + (res["steered"][0] if res["steered"] else "")
    tag = hashlib.sha1(repr(res).encode()).hexdigest()[:10]
    passage = st.text_area("Passage", value=default_passage, key=f"steer_passage_{tag}")
    fx = attempt(results.token_effects, model.name, last["plan"], passage)
    if fx is not None:
        st.html(
            token_passage_html(
                fx.tokens,
                fx.delta,
                prefix=fx.prefix,
                details=[
                    f"{d:+.2f} nats (steered {s:.2f}, unsteered {u:.2f})"
                    for d, s, u in zip(fx.delta, fx.steered, fx.unsteered, strict=True)
                ],
            )
        )
        st.caption(
            "Each token's log-probability under steering minus unsteered: green up, red down "
            f"(hover for numbers). Mean change {fx.mean_delta:+.3f} nats per token."
        )
        up, down = st.columns(2)
        up.dataframe(
            {"token": [t for t, _ in fx.top(5)], "change": [d for _, d in fx.top(5)]},
            hide_index=True,
        )
        down.dataframe(
            {
                "token": [t for t, _ in fx.top(5, largest=False)],
                "change": [d for _, d in fx.top(5, largest=False)],
            },
            hide_index=True,
        )

    st.subheader("Keep this vector")
    k1, k2, k3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    label = k1.text_input("Label", value=last["label"], key=f"steer_keep_label_{tag}")
    if k2.button("Keep", help="for the overshoot and compose pages", key="steer_keep"):
        state.keep_vector(label, last["vector"])
        st.success(f"Kept {label!r}.")
    if k3.button("Save file", key="steer_save"):
        dest = state.workdir() / "vectors" / f"{state.slug(label)}.safetensors"
        saved = attempt(save_vector, last["vector"], dest)
        if saved is not None:
            st.success(f"Saved to {saved}")
