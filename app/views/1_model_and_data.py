"""Page 1: pick a model and a corpus, and capture activations at chosen layers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import results, state
from app.paths import corpus_inside_root, inside_root
from app.widgets import attempt
from workbench.activations.batches import ROW_POSITIONS
from workbench.activations.capture import CaptureProgress, capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.model.hooks import SITE_KINDS

st.title("Model and data")

# --------------------------------------------------------------------------- model

st.subheader("Model")
current = state.model_name()
known = [str(m["name"]) for m in results.models() if m["kind"] == "embedded" and m["available"]]
choices = list(dict.fromkeys([current, state.default_model_name(), *known]))
picked = st.selectbox(
    "Model", choices, index=0, help="the embedded default is preselected", key="model_pick"
)
typed = st.text_input(
    "…or a model name or path",
    placeholder="a TransformerLens name (gpt2), a local model folder or a .gguf file",
    key="model_typed",
)
wanted = typed.strip() or picked
if wanted != current and st.button("Use this model", type="primary", key="model_use"):
    st.session_state[state.MODEL_NAME] = wanted
    st.rerun()

model = state.require_model()
info = model.describe()
cols = st.columns(4)
cols[0].metric("Layers", info["n_layers"])
cols[1].metric("d_model", info["d_model"])
cols[2].metric("Heads", info["n_heads"])
cols[3].metric("Context", model.n_ctx)
st.caption(f"Loaded from `{info['source']}`")

# --------------------------------------------------------------------------- data

st.subheader("Data")
kind = st.radio(
    "Corpus", ["Built-in", "Upload text", "File path"], horizontal=True, key="data_kind"
)
spec: str | None = None
if kind == "Built-in":
    described = results.corpora()
    names = list(described)
    name = st.selectbox(
        "Built-in corpus",
        names,
        index=names.index("general"),
        format_func=lambda c: f"{c}: {described[c]}",
        key="data_builtin",
    )
    spec = f"builtin:{name}"
elif kind == "Upload text":
    upload = st.file_uploader(
        "A .txt file (one document per line) or .jsonl (a `text` field per line)",
        type=["txt", "jsonl"],
        key="data_upload",
    )
    if upload is not None:
        dest = state.workdir() / "uploads" / state.slug(upload.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(upload.getvalue())
        spec = str(dest)
else:
    spec = st.text_input("Path to a .txt or .jsonl corpus", key="data_path").strip() or None

c1, c2, c3, c4 = st.columns(4)
limit = c1.number_input("Documents (0 = all)", min_value=0, value=64, step=16, key="data_limit")
max_tokens = c2.number_input(
    "Tokens per document", min_value=2, value=64, step=16, key="data_tokens"
)
site = c3.selectbox("Site", SITE_KINDS, index=SITE_KINDS.index("resid_pre"), key="data_site")
positions = c4.selectbox("Positions", ROW_POSITIONS, index=0, key="data_positions")
layers = st.multiselect(
    "Layers", list(range(model.n_layers)), default=[model.n_layers // 2], key="data_layers"
)
corpus_tag = state.slug(spec or "corpus").removeprefix("builtin-")
default_out = (
    state.workdir()
    / "stores"
    / (f"{state.slug(model.name)}-{corpus_tag}-{site}-L{'_'.join(map(str, layers)) or 'x'}")
)
out = st.text_input("Store folder", value=str(default_out), key="data_out")
overwrite = st.checkbox("Replace an existing store there", value=True, key="data_overwrite")

if st.button("Capture", type="primary", disabled=spec is None, key="data_capture"):
    bar = st.progress(0.0, text="Capturing…")

    def show(p: CaptureProgress) -> None:
        done = p.tokens_done / p.tokens_total if p.tokens_total else 1.0
        bar.progress(
            min(done, 1.0),
            text=f"{p.docs_done}/{p.n_docs} documents · {p.tokens_done:,} tokens · "
            f"{p.tokens_per_s:,.0f} tokens/s",
        )

    docs = attempt(lambda: load_corpus(corpus_inside_root(spec or ""), limit=int(limit) or None))
    result = None
    if docs is not None:
        texts = docs  # narrowed for the lambda
        result = attempt(
            lambda: capture(
                model,
                texts,
                layers,
                site=site,
                positions=positions,
                max_tokens=int(max_tokens),
                out=inside_root(out, "store folder"),  # checked inside attempt: shown, not raised
                overwrite=overwrite,
                progress=show,
                progress_bar=False,
            )
        )
    if result is not None:
        bar.progress(1.0, text="Done")
        st.session_state[state.STORE_PATH] = str(result.path)
        st.success(
            f"Captured {result.rows:,} rows of {result.tokens:,} tokens from {result.docs} "
            f"documents at layers {result.layers} in {result.elapsed_s:.1f} s "
            f"({result.tokens_per_s:,.0f} tokens/s)."
        )
    else:
        bar.empty()

# --------------------------------------------------------------------------- existing store

st.subheader("Activation store")
typed_store = st.text_input(
    "Use an existing store", value=st.session_state.get(state.STORE_PATH, ""), key="store_in"
)
new_store = typed_store and typed_store != st.session_state.get(state.STORE_PATH)
if new_store and attempt(lambda: ActivationStore.open(inside_root(typed_store, "store"))):
    st.session_state[state.STORE_PATH] = typed_store
store_path = st.session_state.get(state.STORE_PATH)
if store_path:
    store = attempt(lambda: ActivationStore.open(inside_root(str(store_path), "store")))
    if store is not None:
        m = store.manifest
        st.write(
            f"**{Path(store_path).name}**: {store.n_rows:,} rows × {store.d_model} "
            f"({store.site}, positions {store.positions}) at layers {store.layers}, model "
            f"`{m.get('model')}`."
        )
else:
    st.info("No store yet: capture one above, then decompose it on the next page.")
