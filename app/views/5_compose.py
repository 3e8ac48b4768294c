"""Page 5: build a plan of several vectors across layers; retention, interference and cosine."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import results, state
from app.measure_inputs import measure_inputs
from app.vector_picker import vector_picker
from app.widgets import attempt, completion_box, preset
from workbench.experiments.compose import cosines
from workbench.report.plots import compose_figures
from workbench.vectors.vector import UNITS

LAST = "compose_last"
METRICS = ("sentiment", "target words")

st.title("Compose")
st.caption(
    "Apply several vectors at once, possibly at different layers, and see whether each keeps "
    "its effect (retention = combined / alone) and which pairs get in each other's way."
)
model = state.require_model()
rows: list[dict[str, Any]] = st.session_state.setdefault(state.COMPOSE_ROWS, [])

# --------------------------------------------------------------------------- add a vector

st.subheader("Add a vector to the plan")
preset("cmp_layer", max(0, model.n_layers // 5))
c1, c2 = st.columns(2)
layer = int(c1.number_input("Layer", 0, model.n_layers - 1, key="cmp_layer"))
coeff = float(c2.number_input("Coefficient", -100.0, 100.0, 4.0, 0.5, key="cmp_coeff"))
choice = vector_picker(model, "cmp_vec", layer)
c1, c2 = st.columns([1, 3])
metric = c1.radio("Its own effect", METRICS, key="cmp_metric")
words = ""
if metric == "target words":
    words = c2.text_input("Target words", "wedding, bride, marriage", key="cmp_words")

if st.button("Add to plan", key="cmp_add"):
    vector = attempt(choice.build)
    if vector is not None:
        label = f"v{len(rows) + 1}: {choice.label}"
        rows.append(
            {
                "label": label,
                "vector": vector,
                "layer": layer,
                "coeff": coeff,
                "metric": metric,
                "words": words,
            }
        )

# --------------------------------------------------------------------------- the plan

st.subheader("Plan")
if not rows:
    st.info(
        "Add at least two vectors (e.g. 'Love'−'Hate' at one layer and ' wedding'−' ' at "
        "another, as in ActAdd)."
    )
    st.stop()
for i, r in enumerate(rows):
    a, b = st.columns([6, 1], vertical_alignment="center")
    a.markdown(
        f"**{r['label']}** × {r['coeff']:g} at layer {r['layer']} · effect: {r['metric']}"
        + (f" ({r['words']})" if r["metric"] == "target words" else "")
    )
    if b.button("Remove", key=f"cmp_rm_{i}"):
        rows.pop(i)
        st.rerun()

if len(rows) >= 2:
    cos = attempt(cosines, [r["vector"] for r in rows], [r["layer"] for r in rows])
    if cos is not None:
        st.caption("Cosine similarity where vectors share a layer (blank: different layers)")
        st.dataframe(
            [
                {"vector": a["label"], **{b["label"]: v for b, v in zip(rows, line, strict=True)}}
                for a, line in zip(rows, cos, strict=True)
            ],
            hide_index=True,
            key="cmp_cos_table",
        )

c1, c2, c3 = st.columns(3)
units = c1.radio("Units", UNITS, horizontal=True, key="cmp_units")
orthogonalize = c2.checkbox("Orthogonalize vectors at a shared layer", key="cmp_orth")
sampled = c3.checkbox(
    "Count target words in completions",
    key="cmp_sampled",
    help="instead of the next-token log-prob shift of the target words",
)
opts = measure_inputs("cmp")

if st.button("Measure the composition", type="primary", key="cmp_go"):
    st.session_state.pop(LAST, None)
    plan = tuple(
        (r["label"], r["vector"], r["layer"], r["coeff"], r["metric"], r["words"]) for r in rows
    )
    with st.spinner("Running each vector alone, every pair and all together…"):
        data = attempt(results.compose, model.name, plan, units, orthogonalize, sampled, opts)
    state.keep_run(LAST, model, data)

data = state.last_run(LAST, model)

# --------------------------------------------------------------------------- results

st.subheader("Retention, interference and cosine")
for note in data["notes"]:
    st.info(note)
st.plotly_chart(compose_figures(data)[0], key="cmp_figure")
st.caption(
    "Retention: each vector's effect with all the others divided by its effect alone (1: kept). "
    "Interference [i, j]: 1 − (i's effect with j) / (i's effect alone); 0 means j leaves i alone."
)
n_vectors = len(data["vectors"])
retention_ci = data.get("retention_ci") or [None] * n_vectors
control_retention = data.get("controls", {}).get("retention") or [[]] * n_vectors
table = []
for i, v in enumerate(data["vectors"]):
    ci = retention_ci[i]
    table.append(
        {
            "vector": v["label"],
            "metric": v["metric"],
            "alone": data["effects"]["alone"][i]["value"],
            "combined": data["effects"]["combined"][i]["value"],
            "retention": data["retention"][i],
            "retention 95% CI": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-",
            "with controls in partners' place": ", ".join(f"{x:.2f}" for x in control_retention[i]),
            "unreliable": data["retention_unreliable"][i],
        }
    )
st.dataframe(table, hide_index=True, key="cmp_table")
for verdict in data.get("verdicts", []):
    st.write("• " + verdict)
damage = data["damage"]["combined"]
if damage:
    st.caption(
        "Damage of the combination: "
        + ", ".join(f"{k} {v['value']:.3f}" for k, v in damage.items())
    )
if data["samples"] and data["samples"][0]["completions"]:
    st.subheader("Completions")
    for s in data["samples"]:
        st.markdown(f"**{s['run']}**")
        for c in s["completions"]:
            completion_box(c["text"], prompt=c["prompt"], kind="sample")
