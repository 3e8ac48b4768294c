"""Page 4: a coefficient sweep with effect and damage curves, overshoot marked, the completions
at each coefficient, and the norm-ratio diagnostic of why it breaks."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app import history, results, state
from app.measure_inputs import measure_inputs
from app.vector_picker import vector_picker
from app.widgets import blocked, completion_box, how_to_read, layer_field, preset, why_disabled
from workbench.measure.effects import EFFECT_KINDS
from workbench.report.plots import missing_marks, sweep_figures
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
how_to_read(
    "Step 4. Sweep the coefficient and watch where steering starts (onset), peaks while the "
    "damage stays under threshold (best), and breaks the model (breakdown). The left plot is the "
    "effect itself at each coefficient (coefficient 0 is the unsteered model), the right one the "
    "damage; the controls table below compares the vector with control vectors."
)
model = state.require_model()

st.subheader("Vector")
layer = layer_field("Layer", "ov_layer", model.n_layers, max(0, model.n_layers // 5))
choice = vector_picker(model, "ov_vec", 0 if layer is None else layer)

st.subheader("Sweep")
c1, c2, c3 = st.columns([3, 1, 1])
coeffs = c1.text_input(
    "Coefficients (0 is added)",
    "0, 1, 2, 4, 8, 16",
    key="ov_coeffs",
    help="comma-separated; 0, the unsteered model, is always added as the baseline",
)
units = c2.radio(
    "Units",
    UNITS,
    horizontal=True,
    key="ov_units",
    help="raw: multiplies the vector; norm: added norm / the layer's mean residual norm",
)
position = c3.selectbox(
    "Position",
    ["default", *STEER_POSITIONS],
    key="ov_position",
    help="front/middle/back: a prompt window (aligned vectors); all: every position",
)

c1, c2, c3 = st.columns([2, 2, 1])
preset("ov_effect", "sentiment")  # suits the default 'Love' - 'Hate' pair
effect_kind = c1.selectbox(
    "Effect",
    EFFECT_KINDS,
    format_func=lambda k: EFFECT_NAMES.get(k, k),
    key="ov_effect",
    help="what the vector should change, measured at every coefficient",
)
words = ""
if effect_kind.startswith("target"):
    words = c2.text_input(
        "Target words",
        "love, happy, wonderful",
        key="ov_words",
        help="comma-separated words the vector should make more frequent",
    )
decrease = c3.checkbox(
    "Lower is better", key="ov_decrease", help="tick when the vector should lower the effect"
)
t1, t2 = st.columns(2)
max_ppl = t1.number_input(
    "Damage: off-target perplexity ratio above",
    1.0,
    100.0,
    1.2,
    0.05,
    key="ov_max_ppl",
    help="a coefficient is damaging when perplexity on unrelated text rises past this ratio",
)
min_distinct = t2.number_input(
    "Damage: distinct-2 / unsteered below",
    0.01,
    1.0,
    0.8,
    0.05,
    key="ov_min_distinct",
    help="…or when completions repeat themselves: distinct word pairs fall below this share",
)
opts = measure_inputs("ov", on_target=effect_kind == "on_target")


def run_sweep() -> dict[str, Any]:
    assert layer is not None  # the button is disabled without one
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


def _summary(data: dict[str, Any]) -> list[str]:
    ov = data["overshoot"][0]
    marks = ", ".join(f"{k} {'—' if ov[k] is None else f'{ov[k]:g}'}" for k in MARK_HELP)
    rows = " · ".join(
        f"{r['coeff']:g}: effect {r.get('effect', float('nan')):.3g}, damage "
        f"{r.get('damage', float('nan')):.3g}"
        for r in data["rows"]
    )
    return [marks, rows]


MARK_HELP = {
    "onset": "the smallest coefficient whose effect differs from the unsteered one (beyond both "
    "intervals) in the wanted direction",
    "best": "the coefficient with the largest effect while damage stays under the thresholds",
    "breakdown": "the smallest coefficient whose damage passes a threshold",
}

reason = blocked([None if layer is not None else "give a valid layer first (see the Layer field)"])
if st.button("Run sweep", type="primary", key="ov_go", disabled=reason is not None):
    with st.spinner("Measuring every coefficient in one batch…"):
        history.run(LAST, model, f"{choice.label} at {coeffs} ({units})", run_sweep, _summary)
why_disabled(reason)

got = st.session_state.get(LAST)
if not got or got["model"] != model.name:
    history.show(LAST)
    st.stop()
data = got["data"]
ov = data["overshoot"][0]
diag = ov["diagnostics"]

st.subheader("Effect and damage")
m = st.columns(4)
for col, name in zip(m, ("onset", "best", "breakdown"), strict=False):
    col.metric(
        name.capitalize(), "—" if ov[name] is None else f"{ov[name]:g}", help=MARK_HELP[name]
    )
m[3].metric(
    "Residual norm at layer",
    f"{diag['residual_norm']:.3g}",
    help="mean norm of the residual stream at this layer: norm units are multiples of it",
)
for mark, why in missing_marks(ov).items():
    st.caption(f"Why no {mark}: {why}.")
for note in data["notes"]:
    st.info(note)
curves = sweep_figures(data)[0]
st.plotly_chart(curves, key="ov_curves")
st.caption(
    f"Left: {data['effect']['label']} at each coefficient, its absolute value with bootstrap "
    "intervals; coefficient 0 is the unsteered model, so the effect of steering is the rise "
    "from there. Right: off-target perplexity ratio steered / unsteered (dashed: threshold). "
    "Markers: onset ○, best ☆, breakdown ×."
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
    height=300,
    xaxis_title=f"coefficient ({data['config']['units']} units)",
    yaxis_title="|added vector| / residual norm",
    margin={"t": 20, "b": 30},
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
st.caption(
    "Each row is the effect minus the unsteered effect at the reference coefficient, for the "
    "vector and for control vectors built the same way; a specific vector beats its controls."
)
control_columns = {
    "run": st.column_config.TextColumn("run", help="the vector, or a control built like it"),
    "effect": st.column_config.NumberColumn(
        "effect − unsteered",
        help="the run's effect minus the unsteered effect (the same measure as the plot's left "
        "panel, as a difference)",
        format="%.4g",
    ),
    "specificity": st.column_config.NumberColumn(
        "specificity",
        help="how far the vector's effect stands above its matched controls' (the verdict "
        "above says whether that is beyond chance)",
        format="%.3g",
    ),
}
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
    st.dataframe(rows, hide_index=True, column_config=control_columns)

history.show(LAST)
