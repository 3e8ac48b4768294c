"""Page 4: a coefficient sweep with effect and damage curves, overshoot marked, the completions
at each coefficient, and the norm-ratio diagnostic of why it breaks."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app import results, state
from app.measure_inputs import measure_inputs
from app.vector_picker import vector_picker
from app.widgets import attempt, completion_box, preset
from workbench.measure.effects import EFFECT_KINDS
from workbench.report.plots import sweep_figures
from workbench.steer.plan import STEER_POSITIONS
from workbench.vectors.vector import UNITS

LAST = "overshoot_last"
EFFECT_NAMES = {
    "sentiment": "sentiment of completions (VADER)",
    "target_words": "target words per completion",
    "target_logprob": "next-token log-prob of target words",
    "on_target": "perplexity ratio on on-target text (lower is the effect)",
}

st.title("Overshoot")
st.caption(
    "Sweep the coefficient and watch where steering starts (onset), peaks while the damage "
    "stays under threshold (best), and breaks the model (breakdown)."
)
model = state.require_model()

st.subheader("Vector")
preset("ov_layer", max(0, model.n_layers // 5))
layer = int(st.number_input("Layer", 0, model.n_layers - 1, key="ov_layer"))
choice = vector_picker(model, "ov_vec", layer)

st.subheader("Sweep")
c1, c2, c3 = st.columns([3, 1, 1])
coeffs = c1.text_input("Coefficients (0 is added)", "0, 1, 2, 4, 8, 16", key="ov_coeffs")
units = c2.radio("Units", UNITS, horizontal=True, key="ov_units")
position = c3.selectbox("Position", ["default", *STEER_POSITIONS], key="ov_position")

c1, c2, c3 = st.columns([2, 2, 1])
preset("ov_effect", "sentiment")  # suits the default 'Love' - 'Hate' pair
effect_kind = c1.selectbox(
    "Effect", EFFECT_KINDS, format_func=lambda k: EFFECT_NAMES.get(k, k), key="ov_effect"
)
words = ""
if effect_kind.startswith("target"):
    words = c2.text_input("Target words", "love, happy, wonderful", key="ov_words")
decrease = c3.checkbox("Lower is better", key="ov_decrease")
t1, t2 = st.columns(2)
max_ppl = t1.number_input(
    "Damage: off-target perplexity ratio above", 1.0, 100.0, 1.2, 0.05, key="ov_max_ppl"
)
min_distinct = t2.number_input(
    "Damage: distinct-2 / unsteered below", 0.01, 1.0, 0.8, 0.05, key="ov_min_distinct"
)
opts = measure_inputs("ov", on_target=effect_kind == "on_target")


def run_sweep() -> dict[str, Any]:
    vector = choice.build()
    return results.sweep(
        model.name,
        vector,
        choice.label,
        coeffs,
        layer,
        units,
        None if position == "default" else position,
        opts,
        effect_kind,
        words,
        decrease,
        (float(max_ppl), float(min_distinct)),
    )


if st.button("Run sweep", type="primary", key="ov_go"):
    st.session_state.pop(LAST, None)
    with st.spinner("Measuring every coefficient in one batch…"):
        data = attempt(run_sweep)
    state.keep_run(LAST, model, data)

data = state.last_run(LAST, model)
ov = data["overshoot"][0]
diag = ov["diagnostics"]

st.subheader("Effect and damage")
m = st.columns(4)
for col, name in zip(m, ("onset", "best", "breakdown"), strict=False):
    col.metric(name.capitalize(), "—" if ov[name] is None else f"{ov[name]:g}")
m[3].metric("Residual norm at layer", f"{diag['residual_norm']:.3g}")
for note in data["notes"]:
    st.info(note)
curves = sweep_figures(data)[0]
st.plotly_chart(curves, key="ov_curves")
st.caption(
    f"Effect: {data['effect']['label']} minus unsteered, with bootstrap intervals. Damage: "
    "off-target perplexity ratio steered / unsteered (dashed: threshold). Markers: onset ○, "
    "best ☆, breakdown ×."
)

st.subheader("Why it breaks: added norm against the residual stream")
cs = [r["coeff"] for r in data["rows"]]
fig = go.Figure()
fig.add_scatter(x=cs, y=diag["norm_ratio"], mode="lines+markers", name="|added| / residual norm")
if diag.get("attn_to_steered"):
    fig.add_scatter(
        x=cs,
        y=diag["attn_to_steered"],
        mode="lines+markers",
        name="attention to steered",
        yaxis="y2",
    )
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "attention share"})
fig.add_hline(y=1.0, line_dash="dot", annotation_text="vector = stream")
fig.update_layout(
    height=300, xaxis_title="coefficient", yaxis_title="norm ratio", margin={"t": 20, "b": 30}
)
st.plotly_chart(fig, key="ov_norms")
st.write(f"**Diagnosis:** {diag['why']}.")

st.subheader("Completions at each coefficient")
marks = {ov[k]: k for k in ("onset", "best", "breakdown") if ov[k] is not None}
by_coeff = {r["coeff"]: r for r in data["rows"]}
for s in data["samples"]:
    row = by_coeff.get(s["coeff"], {})
    left, right = st.columns([1, 5])
    tag = f" · **{marks[s['coeff']]}**" if s["coeff"] in marks else ""
    left.markdown(f"**{s['coeff']:g}**{tag}")
    if "damage" in row:
        left.caption(f"damage {row['damage']:.2f} · ratio {row['norm_ratio']:.2f}")
    with right:
        for c in s["completions"]:
            completion_box(c["text"], prompt=c["prompt"], kind="sample")

st.subheader("Controls")
for ctl in data["controls"]["by_layer"]:
    rows = [
        {"run": "vector", "effect": ctl["vector"]["effect"]["value"]},
        {
            "run": f"random (seed {ctl['random']['seed']})",
            "effect": ctl["random"]["effect"]["value"],
        },
    ]
    if ctl.get("injection"):
        rows.append(
            {
                "run": f"injection {ctl['injection']['text']!r}",
                "effect": ctl["injection"]["effect"]["value"],
            }
        )
    matched = ctl.get("matched") or {}
    for item in matched.get("items", []):
        rows.append(
            {
                "run": f"control {item['label']}",
                "effect": (item.get("effect") or {}).get("value"),
                "specificity": item.get("specificity"),
            }
        )
    spec = matched.get("specificity")
    if spec:
        rows[0]["specificity"] = spec["specificity"]
    st.caption(f"At coefficient {ctl['coeff']:g} ({ctl['reference']}):")
    if spec:
        (st.success if spec["status"] == "specific" else st.warning)(
            "Specificity: " + spec["verdict"]
        )
    st.dataframe(rows, hide_index=True)
