"""Page 3: steered and unsteered completions side by side, and a passage coloured by how
steering changes each token's log-probability."""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from app import history, results, state
from app.paths import save_vector
from app.vector_picker import vector_picker
from app.widgets import (
    attempt,
    blocked,
    completion_box,
    how_to_read,
    layer_field,
    preset,
    token_passage_html,
    token_text,
    why_disabled,
)
from workbench.steer.plan import STEER_POSITIONS, PlanEntry, SteeringPlan
from workbench.steer.sampling import ACTADD, Sampling
from workbench.vectors.vector import UNITS

LAST = "steer_last"  # session key: the latest good run (plan, vector, label, result)
DEFAULTS = {"steer_units": "raw", "steer_coeff_raw": 5.0, "steer_coeff_norm": 1.0}

st.title("Steer")
how_to_read(
    "Pick a vector, a layer and a coefficient, and press Steer: the left column is the model "
    "as it is, the right one the same samples (same random seeds) with the vector added. Below, "
    "each token of a passage is green when steering makes it more likely, red when less."
)
model = state.require_model()

# A candidate sent from discovery sets the layer, units and coefficient for itself; once the
# user picks another vector those settings go back to the defaults instead of carrying over.
sent_preset = st.session_state.get(state.SENT_PRESET)
if sent_preset:
    still = st.session_state.get("steer_vec_src") == "Kept or discovered" and (
        st.session_state.get("steer_vec_kept") == sent_preset["label"]
    )
    if not still:
        st.session_state.pop(state.SENT_PRESET)
        st.session_state["steer_layer"] = str(max(0, model.n_layers // 5))
        st.session_state.update(DEFAULTS)
        st.info(
            f"Layer, units and coefficient are back to their defaults: they had been set for "
            f"{sent_preset['label']!r}, which is no longer the chosen vector."
        )

# --------------------------------------------------------------------------- the vector

st.subheader("Vector")
layer = layer_field(
    "Layer",
    "steer_layer",
    model.n_layers,
    max(0, model.n_layers // 5),
    help="where the vector is built and added (residual stream before the block), "
    f"0 to {model.n_layers - 1}",
)
sent = st.session_state.get(state.SEND_TO_STEER)
choice = vector_picker(
    model,
    "steer_vec",
    0 if layer is None else layer,
    default="Kept or discovered" if sent in state.library() else None,
)
if sent_preset and st.session_state.get(state.SENT_PRESET):
    st.info(
        f"Layer {sent_preset['layer']}, {sent_preset['units']} units and coefficient "
        f"{sent_preset['coeff']:.3g} were set for {sent_preset['label']!r} by the discovery page; "
        "choosing another vector puts them back to the defaults."
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
for k, v in DEFAULTS.items():
    preset(k, v)
units = c1.radio(
    "Units",
    UNITS,
    horizontal=True,
    key="steer_units",
    help="raw: multiplies the vector as it is; norm: the added vector's norm as a multiple of "
    "the layer's mean residual norm (1.0 = as long as the residual stream itself)",
)
if units == "raw":
    coeff = c2.slider(
        "Coefficient",
        -30.0,
        30.0,
        step=0.5,
        key="steer_coeff_raw",
        help="how many times the vector is added; negative subtracts it",
    )
else:
    coeff = c2.slider(
        "Coefficient",
        -4.0,
        4.0,
        step=0.01,
        key="steer_coeff_norm",
        help="added norm / the layer's mean residual norm; discovery's suggested coefficients "
        "are in these units",
    )
position = c3.selectbox(
    "Position",
    ["default", *STEER_POSITIONS],
    key="steer_position",
    help="front/middle/back: a prompt window (aligned vectors); all: every position",
)

# --------------------------------------------------------------------------- prompt, sampling

st.subheader("Prompt")
prompt = st.text_input(
    "Prompt",
    value="I hate you because",
    key="steer_prompt",
    help="the text both columns continue",
)
c1, c2, c3 = st.columns(3)
n = int(
    c1.number_input(
        "Samples",
        1,
        16,
        state.DEFAULT_SAMPLES,
        key="steer_n",
        help="completions per column; sample i uses the same random draws in both columns",
    )
)
new_tokens = int(
    c2.number_input(
        "New tokens",
        1,
        256,
        state.DEFAULT_NEW_TOKENS,
        key="steer_tokens",
        help="length of each completion in tokens",
    )
)
seed = int(
    c3.number_input("Seed", 0, 2**31 - 1, 0, key="steer_seed", help="same seed, same samples")
)
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
    assert layer is not None  # the button is disabled without one
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


def _summary(run: dict[str, Any]) -> list[str]:
    res = run["result"]
    e = res["plan"][0]
    head = (
        f"**{e['label']}** × {e['coeff']:.3g} ({e['units']}) at layer "
        f"{','.join(map(str, e['layers']))} · prompt {res['prompt']!r} · seed "
        f"{res['settings']['seed']}"
    )
    pairs = [
        f"- unsteered: {u!r}  \n  steered: {s!r}"
        for u, s in zip(res["unsteered"][:2], res["steered"][:2], strict=False)
    ]
    return [head, *pairs]


reason = blocked(
    [
        None if layer is not None else "give a valid layer first (see the Layer field)",
        None if prompt.strip() else "the prompt is empty: type the text to continue",
    ]
)
if st.button("Steer", type="primary", key="steer_go", disabled=reason is not None):
    with st.spinner("Generating both columns under the same seeds…"):
        history.run(LAST, model, f"{choice.label} × {coeff:g} {units}", run_steer, _summary)
why_disabled(reason)

# --------------------------------------------------------------------------- results

got = st.session_state.get(LAST)
last = got["data"] if got and got["model"] == model.name else None
if last:
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
        columns = {
            "token": st.column_config.TextColumn(
                "token", help="the token as the model splits the text (↵: a new line)"
            ),
            "change": st.column_config.NumberColumn(
                "change (nats)",
                help="log-probability under steering minus unsteered; +0.69 = twice as likely",
                format="%+.3f",
            ),
        }
        for col, largest, title in ((up, True, "Made more likely"), (down, False, "Less likely")):
            top = fx.top(5, largest=largest)
            col.markdown(f"**{title}**")
            col.dataframe(
                {"token": [token_text(t) for t, _ in top], "change": [d for _, d in top]},
                hide_index=True,
                column_config=columns,
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

history.show(LAST)
