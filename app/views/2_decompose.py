"""Page 2: decompose stored activations, look at components, rank candidate vectors."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

import dictionaries
from app import results, state
from app.paths import inside_root
from app.widgets import attempt, marked_context_html, token_chips
from dictionaries.scaling import SCALES
from workbench.activations.store import ActivationStore
from workbench.decompose.discover import RANKINGS
from workbench.decompose.hygiene import DEFAULT_MAX_NORM_RATIO, DEFAULT_SCALE
from workbench.decompose.inspect import LENS_RANKS, ComponentReport

FITTED = "decompose_fitted"  # session: {"store", "layer", "method", "k"}
CANDIDATES = "decompose_candidates"  # session: the latest Discovery

st.title("Decompose and discover")
model = state.require_model()

known = [str(p) for p in state.stores()]
current = st.session_state.get(state.STORE_PATH)
options = list(dict.fromkeys([current, *known] if current else known))
if not options:
    st.info("No activation store yet: capture one on the **Model and data** page.")
    st.stop()
store_path = st.selectbox("Activation store", options, key="dec_store")
st.session_state[state.STORE_PATH] = store_path
store = attempt(lambda: ActivationStore.open(inside_root(store_path, "store")))
if store is None:
    st.stop()
st.caption(
    f"Store `{store_path}`: {store.n_rows:,} rows at layers {store.layers} ({store.site}), "
    f"model `{store.manifest.get('model')}`"
)
stamp = results.store_stamp(store_path)

METHOD_PARAMS = {"sae": "n_steps=300, batch_size=256", "pretrained-sae": "folder="}
c1, c2, c3, c4 = st.columns([1, 1, 1, 2])
layer = c1.selectbox("Layer", store.layers, key="dec_layer")
methods = dictionaries.available()
method = c2.selectbox("Method", methods, index=methods.index("pca"), key="dec_method")
k = int(c3.number_input("Components (k)", 1, store.d_model, min(8, store.d_model), key="dec_k"))
params = c4.text_input(
    "Hyperparameters",
    METHOD_PARAMS.get(method, ""),
    key=f"dec_params_{method}",
    help="key=value, comma-separated (as `workbench decompose --param`), e.g. alpha=0.5",
)

h1, h2 = st.columns(2)
max_norm_ratio = h1.number_input(
    "Drop rows over x median norm",
    0.0,
    100.0,
    DEFAULT_MAX_NORM_RATIO,
    0.5,
    key="dec_max_norm",
    help="input hygiene (`--max-norm-ratio`): rows whose norm exceeds this multiple of the "
    "median, the massive first-token activations, are left out of the fit; 0 keeps every row",
)
scale = h2.selectbox(
    "Fit in the space",
    SCALES,
    index=SCALES.index(DEFAULT_SCALE),
    key="dec_scale_space",
    help="`--scale`: standardize each dimension before the fit (default); components become "
    "steering vectors as decoder directions in the model's own space",
)

if st.button("Fit", type="primary", key="dec_fit"):
    with st.spinner(f"Fitting {method} with k={k} (10% of documents held out)…"):
        fitted = attempt(
            results.fit_dictionary,
            store_path,
            stamp,
            layer,
            method,
            k,
            params,
            float(max_norm_ratio),
            str(scale),
        )
    if fitted is not None:
        st.session_state[FITTED] = {
            "store": store_path,
            "layer": layer,
            "method": method,
            "k": k,
            "params": params,
            "max_norm_ratio": float(max_norm_ratio),
            "scale": str(scale),
            "stamp": stamp,
        }
        st.session_state.pop(CANDIDATES, None)

spec = st.session_state.get(FITTED)
if not spec or spec["store"] != store_path or spec["stamp"] != stamp:
    st.info("Choose a layer, a method and k, then **Fit**.")
    st.stop()
dictionary = results.fit_dictionary(
    spec["store"],
    spec["stamp"],
    spec["layer"],
    spec["method"],
    spec["k"],
    spec["params"],
    spec["max_norm_ratio"],
    spec["scale"],
)
st.session_state[state.DICTIONARY] = dictionary
layer = spec["layer"]
method_name = str(spec["method"])

# --------------------------------------------------------------------------- quality, variance

st.subheader(f"{method_name} at layer {layer}, k={dictionary.n_components_}")
with st.spinner("Measuring held-out reconstruction and spliced next-token loss…"):
    q = attempt(results.quality, model.name, dictionary, store_path, stamp, layer)
if q is not None:
    m = st.columns(4)
    m[0].metric("Variance explained (held out)", "n/a" if q["fve"] is None else f"{q['fve']:.1%}")
    m[1].metric("Reconstruction MSE", f"{q['mse']:.4g}")
    m[2].metric("Active codes per row (L0)", f"{q['l0']:.1f}")
    m[3].metric("Dead components", q["dead_atoms"])
    if q.get("loss_clean") is not None:
        m = st.columns(4)
        m[0].metric("Next-token loss", f"{q['loss_clean']:.3f}")
        m[1].metric("…with the layer reconstructed", f"{q['loss_spliced']:.3f}")
        m[2].metric("…with the layer zeroed", f"{q['loss_zero']:.3f}")
        if q.get("recovered") is not None:
            m[3].metric("Loss recovered", f"{q['recovered']:.1%}")
evr = getattr(dictionary, "explained_variance_ratio_", None)
if evr is not None:
    fig = go.Figure()
    idx = list(range(len(evr)))
    fig.add_bar(x=idx, y=list(evr), name="per component")
    fig.add_scatter(x=idx, y=list(evr.cumsum()), name="cumulative", mode="lines+markers")
    fig.update_layout(
        title="Explained variance ratio",
        xaxis_title="component",
        yaxis_title="fraction",
        height=300,
        margin={"t": 40, "b": 30},
    )
    st.plotly_chart(fig, key="dec_evr")
else:
    st.caption(f"Per-component explained variance is defined for PCA, not {method_name}.")

# --------------------------------------------------------------------------- UMAP


def _map_figure(points: Any) -> go.Figure:
    fig = go.Figure()
    xy = points.coords
    if points.categorical:
        for cat in sorted(set(points.colour)):
            sel = [i for i, c in enumerate(points.colour) if c == cat]
            fig.add_scattergl(
                x=xy[sel, 0],
                y=xy[sel, 1],
                mode="markers",
                name=str(cat),
                text=[points.labels[i] for i in sel],
                marker={"size": 5},
            )
    else:
        fig.add_scattergl(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            text=points.labels,
            marker={
                "size": 5,
                "color": points.colour,
                "colorscale": "Viridis",
                "colorbar": {"title": points.colour_name},
            },
        )
    fig.update_layout(
        height=460, margin={"t": 30, "b": 10}, title=f"coloured by {points.colour_name}"
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


with st.expander("UMAP map of activations", expanded=False):
    u1, u2, u3 = st.columns(3)
    colour = u1.selectbox("Colour by", ["component", "doc", "label"], key="dec_umap_colour")
    comp = int(u2.number_input("Component", 0, dictionary.n_components_ - 1, 0, key="dec_umap_c"))
    n_points = int(u3.number_input("Points", 16, 20_000, 600, step=100, key="dec_umap_n"))
    labels_text = ""
    if colour == "label":
        labels_text = st.text_area(
            f"One label per document ({store.manifest['n_docs']} lines), e.g. each one's topic",
            key="dec_umap_labels",
        )
    if st.button("Draw map", key="dec_umap_go"):
        doc_labels = [x.strip() for x in labels_text.splitlines()] if labels_text else None
        with st.spinner("Running UMAP (the first map in a process compiles numba code)…"):
            points = attempt(
                results.activation_map,
                store_path,
                stamp,
                layer,
                colour,
                dictionary,
                comp,
                n_points,
                tuple(doc_labels) if doc_labels else None,
            )
        if points is not None:
            st.plotly_chart(_map_figure(points), key="dec_umap_plot")

# --------------------------------------------------------------------------- component cards

st.subheader("Components")
lens_rank = st.radio(
    "Logit lens ranks tokens by",
    LENS_RANKS,
    index=LENS_RANKS.index("cosine"),
    horizontal=True,
    key="dec_lens_rank",
    help="cosine reads past the few tokens with very long unembeddings that top every logit list",
)
shown = st.multiselect(
    "Components to inspect",
    list(range(dictionary.n_components_)),
    default=list(range(min(4, dictionary.n_components_))),
    key="dec_cards",
)


def _send(label: str, vector: Any, coeff: float | None = None) -> None:
    """Keep ``vector`` and open it on the steer page (in norm units when a scale is known)."""
    state.keep_vector(label, vector)
    st.session_state[state.SEND_TO_STEER] = label
    st.session_state["steer_vec_src"] = "Kept or discovered"
    st.session_state["steer_vec_kept"] = label
    st.session_state["steer_layer"] = layer
    if coeff is not None:
        st.session_state["steer_units"] = "norm"
        st.session_state["steer_coeff_norm"] = coeff
    st.switch_page("views/3_steer.py")


def _card(r: ComponentReport) -> None:
    with st.container(border=True):
        evr_text = (
            ""
            if r.explained_variance_ratio is None
            else (f" · {r.explained_variance_ratio:.1%} of variance")
        )
        st.markdown(f"**Component {r.index}**{evr_text}")
        left, mid, right = st.columns([2, 3, 2])
        if r.lens is not None:
            left.markdown("Logit lens: promotes " + token_chips([t.token for t in r.lens.promoted]))
            left.markdown("suppresses " + token_chips([t.token for t in r.lens.suppressed]))
        mid.markdown("Top contexts")
        mid.html("<br>".join(marked_context_html(c.left, c.token, c.right) for c in r.top))
        if r.bottom:
            mid.markdown("Most negative contexts")
            mid.html("<br>".join(marked_context_html(c.left, c.token, c.right) for c in r.bottom))
        h = r.histogram
        fig = go.Figure(
            go.Bar(
                x=[(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)],
                y=h.counts,
                marker_color="#6366f1",
            )
        )
        fig.update_layout(
            height=180,
            margin={"t": 10, "b": 10, "l": 10, "r": 10},
            xaxis_title="activation",
            yaxis_title="rows",
        )
        right.plotly_chart(fig, key=f"dec_hist_{r.index}")
        b1, b2 = right.columns(2)
        for sign, col in ((1, b1), (-1, b2)):
            if col.button(
                f"Steer {'+' if sign > 0 else '−'}{r.index}", key=f"dec_send_{r.index}_{sign}"
            ):
                vec = attempt(results.vector_from_component, model.name, dictionary, r.index, sign)
                if vec is not None:
                    _send(f"{method_name}{'+' if sign > 0 else '-'}{r.index}@{layer}", vec)


if shown:
    with st.spinner("Reading top contexts, histograms and logit lens…"):
        reports = attempt(
            results.component_reports,
            model.name,
            dictionary,
            store_path,
            stamp,
            layer,
            tuple(int(i) for i in shown),
            lens_rank,
        )
    for report in reports or []:
        _card(report)

# --------------------------------------------------------------------------- candidates

st.subheader("Ranked candidate vectors")
st.caption(
    "Both signs of every component, each calibrated to the largest coefficient (in units of the "
    "layer's mean residual norm) that keeps held-out perplexity within the damage budget, then "
    "described by what it does there. Ranked by between-document share x effect over random "
    "directions of the same damage; inert candidates (no stronger than random) last."
)
c1, c2 = st.columns(2)
budget = c1.number_input(
    "Damage budget (held-out perplexity ratio)",
    1.05,
    4.0,
    1.25,
    0.05,
    key="dec_budget",
    help="each candidate's suggested coefficient keeps perplexity on held-out text at most this "
    "many times the unsteered one",
)
rank_by = c2.selectbox(
    "Rank by",
    [r for r in RANKINGS if r != "contrast"],
    key="dec_rank_by",
    help="combined: between-document share x effect over random controls; or one signal alone",
)
if st.button("Rank candidates", key="dec_rank"):
    with st.spinner("Calibrating every candidate…"):
        found = attempt(
            results.discovery,
            model.name,
            dictionary,
            store_path,
            stamp,
            layer,
            float(budget),
            str(rank_by),
        )
    if found is not None:
        st.session_state[CANDIDATES] = found
found = st.session_state.get(CANDIDATES)
if found is not None:
    st.caption(f"Site: {found.to_json()['layer_convention']}")
    st.dataframe(
        [
            {
                "name": c.name,
                "label": c.label,
                "suggested coeff (norm)": c.suggested_coeff,
                "ppl ratio": c.ppl_ratio,
                "effect (KL, nats)": c.effect,
                "x random": c.effect_vs_random,
                "between-doc share": c.between_doc_share,
                "inert": c.inert,
                "contrastive words": ", ".join(c.contrastive_words),
                "completion": c.completions[0] if c.completions else "",
            }
            for c in found.candidates
        ],
        hide_index=True,
        key="dec_table",
    )
    names = [f"{c.label}{' (inert)' if c.inert else ''}" for c in found.candidates]
    pick = st.selectbox(
        "Candidate", range(len(names)), format_func=lambda i: names[i], key="dec_pick"
    )
    cand = found.candidates[pick]
    if cand.suggested_coeff is None:
        st.warning("No coefficient kept this candidate within the damage budget.")
    if st.button(
        "Send to steering",
        type="primary",
        key="dec_send",
        disabled=cand.suggested_coeff is None,
    ):
        _send(f"{method_name}{cand.name}@{layer}", cand.vector, cand.suggested_coeff)
