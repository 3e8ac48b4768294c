"""Page 2: decompose stored activations, look at components, rank candidate vectors."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

import dictionaries
from app import candidates, history, results, state
from app.paths import inside_root
from app.widgets import (
    attempt,
    how_to_read,
    marked_context_html,
    progress_sink,
    token_chips,
)
from dictionaries.progress import reporting
from dictionaries.scaling import SCALES
from workbench.activations.store import ActivationStore
from workbench.decompose.discover import (
    RANKINGS,
    Candidate,
    Discovery,
    candidate_name,
    over_budget,
)
from workbench.decompose.hygiene import DEFAULT_MAX_NORM_RATIO, DEFAULT_SCALE
from workbench.decompose.inspect import LENS_RANKS, ComponentReport
from workbench.decompose.trials import TrialSettings
from workbench.report.plots import robust_range

FITTED = "decompose_fitted"  # session: {"store", "layer", "method", "k"}
CANDIDATES = "decompose_candidates"  # session: the latest Discovery
MAP = "decompose_map"  # session: the arguments of the map last drawn (redrawn from the cache)
RUNS_FIT = "decompose_fit_runs"
RUNS_RANK = "decompose_rank_runs"

st.title("Decompose and discover")
how_to_read(
    "Step 2. Split the stored activations into components (directions), look at what each one "
    "responds to, then rank both signs of every component as steering vectors: each is given "
    "the largest coefficient that keeps the model's text intact (the damage budget), and Send to "
    "steering opens it on the Steer page at that coefficient."
)
model = state.require_model()

known = [str(p) for p in state.stores()]
current = st.session_state.get(state.STORE_PATH)
options = list(dict.fromkeys([current, *known] if current else known))
if not options:
    st.info("No activation store yet: capture one on the **Model and data** page.")
    st.stop()
store_path = st.selectbox(
    "Activation store",
    options,
    key="dec_store",
    help="captured on the Model and data page; newest first",
)
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
layer = c1.selectbox(
    "Layer", store.layers, key="dec_layer", help="one of the layers the store recorded"
)
methods = dictionaries.available()
method = c2.selectbox(
    "Method",
    methods,
    index=methods.index("pca"),
    key="dec_method",
    help="pca: orthogonal directions of most variance; ica: independent directions; "
    "dictionary learning and sae: sparse codes (few components active per token)",
)
k = int(
    c3.number_input(
        "Components (k)",
        1,
        store.d_model,
        min(8, store.d_model),
        key="dec_k",
        help="how many directions to find",
    )
)
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


def _fit() -> dict[str, Any]:
    with reporting(progress_sink(fit_progress), first=2.0, every=2.0):
        d = results.fit_dictionary(
            store_path,
            stamp,
            layer,
            method,
            k,
            params,
            float(max_norm_ratio),
            str(scale),
        )
    return {"dictionary": d}


if st.button("Fit", type="primary", key="dec_fit"):
    fit_progress = st.empty()
    with st.spinner(f"Fitting {method} with k={k} (10% of documents held out)…"):
        fitted = history.run(
            RUNS_FIT,
            model,
            f"{method} k={k} at layer {layer} ({scale}, drop over {max_norm_ratio:g}x)",
            _fit,
            lambda d: [f"{d['dictionary'].n_components_} components fitted"],
        )
    fit_progress.empty()
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
        st.session_state.pop(MAP, None)

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
    m[0].metric(
        "Variance explained (held out)",
        "n/a" if q["fve"] is None else f"{q['fve']:.1%}",
        help="share of the activations' variance the k components reconstruct, on the 10% of "
        "documents left out of the fit, in the model's own space; lower than the curve below, "
        "which is measured on the fitted rows in the standardized space",
    )
    m[1].metric(
        "Reconstruction MSE",
        f"{q['mse']:.4g}",
        help="mean squared error per dimension between held-out activations and their "
        "reconstruction (squared residual-stream units); compare it with the activations' own "
        "variance, which the first number does",
    )
    dense = method_name in ("pca", "ica")
    m[2].metric(
        "Active codes per row (L0)",
        f"{q['l0']:.1f}",
        help="components with a non-zero code per row, on average. PCA and ICA codes are dense, "
        "so L0 is about k by construction; it means something for sparse methods (dictionary "
        "learning, SAEs)",
    )
    m[3].metric(
        "Dead components",
        q["dead_atoms"],
        help="components never active on the held-out rows (sparse methods); 0 for dense ones",
    )
    if dense:
        st.caption(f"L0 ≈ k is expected for {method_name}: every component is active on every row.")
    if q.get("loss_clean") is not None:
        m = st.columns(4)
        m[0].metric(
            "Next-token loss",
            f"{q['loss_clean']:.3f}",
            help="the model's cross-entropy on held-out text, nats per token",
        )
        m[1].metric(
            "…with the layer reconstructed",
            f"{q['loss_spliced']:.3f}",
            help="the same with this layer's activations replaced by their reconstruction",
        )
        m[2].metric(
            "…with the layer zeroed",
            f"{q['loss_zero']:.3f}",
            help="the same with this layer's activations set to zero (the worst case)",
        )
        if q.get("recovered") is not None:
            m[3].metric(
                "Loss recovered",
                f"{q['recovered']:.1%}",
                help="(zeroed − reconstructed) / (zeroed − clean): 100% = the reconstruction "
                "costs nothing",
            )
evr = getattr(dictionary, "explained_variance_ratio_", None)
if evr is not None:
    fig = go.Figure()
    idx = list(range(len(evr)))
    fig.add_bar(x=idx, y=list(evr), name="per component")
    fig.add_scatter(x=idx, y=list(evr.cumsum()), name="cumulative", mode="lines+markers")
    fig.update_layout(
        title="Explained variance ratio (fitted rows, standardized space)",
        xaxis_title="component",
        yaxis_title="fraction of variance",
        height=300,
        margin={"t": 40, "b": 30},
    )
    st.plotly_chart(fig, key="dec_evr")
    st.caption(
        "The curve is measured on the rows the fit saw, after standardizing each dimension; the "
        "held-out number above is on unseen documents in the model's own space, where a few "
        "large dimensions dominate, so it is usually lower."
    )
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
        span = robust_range(points.colour)  # 2nd-98th percentile: one outlier cannot saturate
        fig.add_scattergl(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            text=points.labels,
            marker={
                "size": 5,
                "color": points.colour,
                "colorscale": "Viridis",
                "cmin": span[0] if span else None,
                "cmax": span[1] if span else None,
                "colorbar": {"title": points.colour_name},
            },
        )
    fig.update_layout(
        height=460,
        margin={"t": 30, "b": 10},
        title=f"coloured by {points.colour_name}"
        + ("" if points.categorical else " (colour scale: 2nd to 98th percentile)"),
        xaxis_title="UMAP 1",
        yaxis_title="UMAP 2",
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


with st.expander("UMAP map of activations", expanded=MAP in st.session_state):
    st.caption(
        "Each dot is one activation (a token), placed so that similar activations sit close; "
        "the axes have no units. Colour shows a component's code, the document, or your labels."
    )
    u1, u2, u3 = st.columns(3)
    colour = u1.selectbox(
        "Colour by",
        ["component", "doc", "label"],
        key="dec_umap_colour",
        help="component: the chosen component's code; doc: which document; label: your labels",
    )
    comp = int(
        u2.number_input(
            "Component",
            0,
            dictionary.n_components_ - 1,
            0,
            key="dec_umap_c",
            help="the component whose code colours the dots",
        )
    )
    n_points = int(
        u3.number_input(
            "Points",
            16,
            20_000,
            600,
            step=100,
            key="dec_umap_n",
            help="a random sample of rows; more points take longer",
        )
    )
    labels_text = ""
    if colour == "label":
        labels_text = st.text_area(
            f"One label per document ({store.manifest['n_docs']} lines), e.g. each one's topic",
            key="dec_umap_labels",
        )
    if st.button("Draw map", key="dec_umap_go"):
        doc_labels = [x.strip() for x in labels_text.splitlines()] if labels_text else None
        st.session_state[MAP] = (
            store_path,
            stamp,
            layer,
            colour,
            comp,
            n_points,
            tuple(doc_labels) if doc_labels else None,
        )
    drawn = st.session_state.get(MAP)
    if drawn is not None and drawn[0] == store_path and drawn[1] == stamp:
        # The map stays on the page across reruns; the cache makes redrawing it instant.
        with st.spinner("Running UMAP (the first map in a process compiles numba code)…"):
            points = attempt(results.activation_map, *drawn[:4], dictionary, *drawn[4:])
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


def _send(name: str, vector: Any, coeff: float) -> None:
    candidates.send(name, vector, coeff, method=method_name, layer=layer)


def _discovered() -> Discovery | None:
    """The ranked candidates of the dictionary on the page, if they were ranked."""
    found: Discovery | None = st.session_state.get(CANDIDATES)
    return found


def _calibrated(index: int, sign: int) -> Candidate | None:
    found = _discovered()
    name = candidate_name(index, sign)
    return next((c for c in found.candidates if c.name == name), None) if found else None


def _card(r: ComponentReport) -> None:
    with st.container(border=True):
        evr_text = (
            ""
            if r.explained_variance_ratio is None
            else (f" · {r.explained_variance_ratio:.1%} of variance")
        )
        st.markdown(
            f"**Component {r.index}**{evr_text} · candidates `{candidate_name(r.index, 1)}` (+) "
            f"and `{candidate_name(r.index, -1)}` (−)"
        )
        left, mid, right = st.columns([2, 3, 2])
        if r.lens is not None:
            left.markdown(
                "Logit lens: promotes " + token_chips([t.token for t in r.lens.promoted]),
                help="tokens whose unembedding points most along this direction (cosine); "
                "secondary evidence of what it means",
            )
            left.markdown("suppresses " + token_chips([t.token for t in r.lens.suppressed]))
        mid.markdown(
            "Top contexts",
            help="the tokens (highlighted) where this component's code is highest, with a few "
            "tokens either side",
        )
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
            xaxis_title="code (activation along the component)",
            yaxis_title="rows",
        )
        right.plotly_chart(fig, key=f"dec_hist_{r.index}")
        b1, b2 = right.columns(2)
        for sign, col in ((1, b1), (-1, b2)):
            name = candidate_name(r.index, sign)
            cand = _calibrated(r.index, sign)
            coeff = cand.suggested_coeff if cand is not None else None
            tip = (
                f"open {name} on the Steer page at its calibrated coefficient {coeff:.3g} "
                "(norm units)"
                if coeff is not None
                else f"open {name} on the Steer page at {TrialSettings().coeff_start:g} x the "
                "residual norm (norm units), where calibration starts; rank the candidates "
                "below for a coefficient within the damage budget"
            )
            if col.button(
                f"Steer {'+' if sign > 0 else '−'}{r.index}",
                key=f"dec_send_{r.index}_{sign}",
                help=tip,
            ):
                vec = attempt(results.vector_from_component, model.name, dictionary, r.index, sign)
                if vec is not None:
                    _send(name, vec, coeff if coeff is not None else TrialSettings().coeff_start)


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
    "directions of the same damage; inert candidates (no stronger than random) last. Hover over "
    "a column title for its meaning."
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


def _rank() -> dict[str, Any]:
    found = results.discovery(
        model.name, dictionary, store_path, stamp, layer, float(budget), str(rank_by)
    )
    return {"found": found}


def _rank_summary(d: dict[str, Any]) -> list[str]:
    found: Discovery = d["found"]
    over = sum(over_budget(c, found.settings.damage_budget) for c in found.candidates)
    top = found.candidates[0] if found.candidates else None
    return [
        f"{len(found.candidates)} candidates, {over} over the damage budget, "
        f"{sum(c.inert for c in found.candidates)} inert",
        f"top: {top.label}" if top else "",
    ]


if st.button("Rank candidates", key="dec_rank"):
    with st.spinner("Calibrating every candidate…"):
        ranked = history.run(
            RUNS_RANK,
            model,
            f"{method_name} layer {layer}, budget x{budget:g}, by {rank_by}",
            _rank,
            _rank_summary,
        )
    if ranked is not None:
        st.session_state[CANDIDATES] = ranked["found"]
found = _discovered()
if found is not None:
    candidates.show(found, key="dec")

history.show(RUNS_FIT)
history.show(RUNS_RANK)
