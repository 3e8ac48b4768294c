"""Page 5: build a plan of several vectors across layers; retention, interference and cosine."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import history, results, state
from app.measure_inputs import measure_inputs
from app.vector_picker import vector_picker
from app.widgets import attempt, blocked, completion_box, how_to_read, layer_field, why_disabled
from workbench.experiments.compose import cosines
from workbench.experiments.composition_math import retention_warnings
from workbench.report.plots import compose_figures, metric_title
from workbench.vectors.vector import UNITS

LAST = "compose_last"
METRICS = ("sentiment", "target words")

st.title("Compose")
how_to_read(
    "Step 5. Apply several vectors at once, possibly at different layers, and see whether each "
    "keeps its effect (retention = its effect with the others / its effect alone; 1 = kept, "
    "0 = lost) and which pairs get in each other's way. A retention whose alone effect is about "
    "zero is marked unreliable: dividing by noise gives any number."
)
model = state.require_model()
rows: list[dict[str, Any]] = st.session_state.setdefault(state.COMPOSE_ROWS, [])

# --------------------------------------------------------------------------- add a vector

st.subheader("Add a vector to the plan")
c1, c2 = st.columns(2)
layer = layer_field("Layer", "cmp_layer", model.n_layers, max(0, model.n_layers // 5), where=c1)
coeff = float(
    c2.number_input(
        "Coefficient",
        -100.0,
        100.0,
        4.0,
        0.5,
        key="cmp_coeff",
        help="in the units chosen under the plan (raw or norm)",
    )
)
choice = vector_picker(model, "cmp_vec", 0 if layer is None else layer)
c1, c2 = st.columns([1, 3])
metric = c1.radio(
    "Its own effect",
    METRICS,
    key="cmp_metric",
    help="what this vector should change, measured alone and in the combination",
)
words = ""
if metric == "target words":
    words = c2.text_input(
        "Target words",
        "wedding, bride, marriage",
        key="cmp_words",
        help="comma-separated words this vector should make more likely",
    )

add_reason = blocked([None if layer is not None else "give a valid layer first"])
if st.button("Add to plan", key="cmp_add", disabled=add_reason is not None):
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
units = c1.radio(
    "Units",
    UNITS,
    horizontal=True,
    key="cmp_units",
    help="raw: coefficients multiply the vectors; norm: multiples of the layer's residual norm",
)
orthogonalize = c2.checkbox(
    "Orthogonalize vectors at a shared layer",
    key="cmp_orth",
    help="remove from each vector its overlap with the ones before it at the same layer",
)
sampled = c3.checkbox(
    "Count target words in completions",
    key="cmp_sampled",
    help="instead of the next-token log-prob shift of the target words",
)
opts = measure_inputs("cmp")


def _summary(data: dict[str, Any]) -> list[str]:
    return [
        ", ".join(
            f"{v['label']}: retention {r:.2f}"
            for v, r in zip(data["vectors"], data["retention"], strict=True)
        ),
        *[f"- {v}" for v in data.get("verdicts", [])],
    ]


go_reason = blocked([None if len(rows) >= 2 else "add at least two vectors to the plan"])
if st.button(
    "Measure the composition", type="primary", key="cmp_go", disabled=go_reason is not None
):
    plan = tuple(
        (r["label"], r["vector"], r["layer"], r["coeff"], r["metric"], r["words"]) for r in rows
    )
    with st.spinner("Running each vector alone, every pair and all together…"):
        history.run(
            LAST,
            model,
            " + ".join(r["label"] for r in rows),
            lambda: results.compose(model.name, plan, units, orthogonalize, sampled, opts),
            _summary,
        )
why_disabled(go_reason)

got = st.session_state.get(LAST)
if not got or got["model"] != model.name:
    history.show(LAST)
    st.stop()
data = got["data"]

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
alone = data["effects"]["alone"]
warnings = retention_warnings(
    [(a.get("low", a["value"]), a.get("high", a["value"])) for a in alone], retention_ci
)
table = []
for i, v in enumerate(data["vectors"]):
    ci = retention_ci[i]
    table.append(
        {
            "vector": v["label"],
            "metric": metric_title(v["metric"]),
            "alone": alone[i]["value"],
            "combined": data["effects"]["combined"][i]["value"],
            "retention": data["retention"][i],
            "retention 95% CI": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-",
            "with controls in partners' place": ", ".join(f"{x:.2f}" for x in control_retention[i]),
            "reliable": not (data["retention_unreliable"][i] or warnings[i]),
        }
    )
st.dataframe(
    table,
    hide_index=True,
    key="cmp_table",
    column_config={
        "vector": st.column_config.TextColumn("vector", help="the plan's label of the vector"),
        "metric": st.column_config.TextColumn("metric", help="the vector's own effect measure"),
        "alone": st.column_config.NumberColumn(
            "alone", help="its effect with only this vector applied", format="%.4g"
        ),
        "combined": st.column_config.NumberColumn(
            "combined", help="its effect with every vector of the plan applied", format="%.4g"
        ),
        "retention": st.column_config.NumberColumn(
            "retention",
            help="combined / alone: 1 = kept, 0 = lost, above 1 = helped",
            format="%.2f",
        ),
        "retention 95% CI": st.column_config.TextColumn(
            "retention 95% CI", help="bootstrap interval of the retention"
        ),
        "with controls in partners' place": st.column_config.TextColumn(
            "with controls in partners' place",
            help="its retention when control vectors replace its partners: what non-specific "
            "interference looks like",
        ),
        "reliable": st.column_config.CheckboxColumn(
            "reliable",
            help="unticked when the alone effect is about 0 or its interval includes 0, or the "
            "retention interval is too wide: the ratio then says nothing",
        ),
    },
)
for v, why in zip(data["vectors"], warnings, strict=True):
    if why:
        st.warning(f"{v['label']}: retention {why}.", icon=":material/warning:")
for verdict in data.get("verdicts", []):
    st.write("• " + verdict)
damage = data["damage"]["combined"]
if damage:
    st.caption(
        "Damage of the combination: "
        + ", ".join(f"{metric_title(k)} {v['value']:.3f}" for k, v in damage.items())
    )
if data["samples"] and data["samples"][0]["completions"]:
    st.subheader("Completions")
    for s in data["samples"]:
        st.markdown(f"**{s['run']}**")
        for c in s["completions"]:
            completion_box(c["text"], prompt=c["prompt"], kind="sample")

history.show(LAST)
