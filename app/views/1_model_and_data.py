"""Page 1: pick a model and a corpus, and capture activations at chosen layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import history, results, state
from app.paths import corpus_inside_root, inside_root
from app.widgets import attempt, blocked, how_to_read, why_disabled
from workbench.activations.batches import ROW_POSITIONS
from workbench.activations.capture import CaptureProgress, capture
from workbench.activations.store import ActivationStore, is_store
from workbench.corpora import load_corpus
from workbench.errors import WorkbenchError
from workbench.model.hooks import SITE_KINDS

RUNS = "data_capture_last"

st.title("Model and data")
how_to_read(
    "Step 1. Choose the model, then a corpus and the layers to record: Capture runs the corpus "
    "through the model and saves the activations at those layers (a store) for the next page to "
    "decompose. Nothing is overwritten unless you tick Replace and confirm."
)

# --------------------------------------------------------------------------- model

st.subheader("Model")
current = state.model_name()
known = [str(m["name"]) for m in results.models() if m["kind"] == "embedded" and m["available"]]
choices = list(dict.fromkeys([current, state.default_model_name(), *known]))
picked = st.selectbox(
    "Model",
    choices,
    index=0,
    help="the session's model first, then the embedded default; a new model is used only once "
    "it has loaded",
    key="model_pick",
)
typed = st.text_input(
    "…or a model name or path",
    placeholder="a TransformerLens name (gpt2), a local model folder or a .gguf file",
    key="model_typed",
    help="loaded when you press Use this model; if it fails to load, the session keeps its model",
)
now_device, now_dtype = state.model_placement()
c1, c2 = st.columns(2)
device = c1.selectbox(
    "Device",
    state.DEVICE_CHOICES,
    index=state.DEVICE_CHOICES.index(now_device) if now_device in state.DEVICE_CHOICES else 0,
    help="auto: cuda, then mps, then cpu; an unavailable device is refused with the reason",
    key="model_device_pick",
)
dtype = c2.selectbox(
    "Precision",
    state.DTYPE_CHOICES,
    index=state.DTYPE_CHOICES.index(now_dtype) if now_dtype in state.DTYPE_CHOICES else 0,
    help="float32 (exact), bfloat16 (half the memory; GPUs and recent CPUs) or float16 (GPU only)",
    key="model_dtype_pick",
)
wanted = typed.strip() or picked
changed = wanted != current or (device, dtype) != (now_device, now_dtype)
if changed and st.button("Use this model", type="primary", key="model_use"):
    with st.spinner(f"Loading {wanted} ({device}, {dtype})…"):
        if state.use_model(wanted, (device, dtype)) is not None:
            st.rerun()
state.back_to_default("model_back")

model = state.require_model()
info = model.describe()
cols = st.columns(4)
cols[0].metric("Layers", info["n_layers"], help="transformer blocks; layers are numbered from 0")
cols[1].metric("d_model", info["d_model"], help="width of the residual stream (one activation)")
cols[2].metric("Heads", info["n_heads"], help="attention heads per block")
cols[3].metric("Context", model.n_ctx, help="the longest text the model reads, in tokens")
st.caption(
    f"Session model `{model.name}` on {model.device} in {str(model.dtype).removeprefix('torch.')}, "
    f"loaded from `{info['source']}`"
)

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
limit = c1.number_input(
    "Documents (0 = all)",
    min_value=0,
    value=64,
    step=16,
    key="data_limit",
    help="how many documents of the corpus to read, from the start",
)
max_tokens = c2.number_input(
    "Tokens per document",
    min_value=2,
    value=64,
    step=16,
    key="data_tokens",
    help="longer documents are cut to this many tokens",
)
site = c3.selectbox(
    "Site",
    SITE_KINDS,
    index=SITE_KINDS.index("resid_pre"),
    key="data_site",
    help="where in each block to record: resid_pre is the residual stream entering block L",
)
positions = c4.selectbox(
    "Positions",
    ROW_POSITIONS,
    index=0,
    key="data_positions",
    help="which tokens become rows: all of them, or one summary row per document",
)
layers = st.multiselect(
    "Layers",
    list(range(model.n_layers)),
    default=[model.n_layers // 2],
    key="data_layers",
    help="the layers to record; the store keeps one matrix per layer",
)
corpus_tag = state.slug(spec or "corpus").removeprefix("builtin-")
default_out = (
    state.workdir()
    / "stores"
    / (f"{state.slug(model.name)}-{corpus_tag}-{site}-L{'_'.join(map(str, layers)) or 'x'}")
)
# The folder follows the corpus, layers and site until the user types one of their own.
auto = str(default_out)
if st.session_state.get("data_out_auto") != auto:
    if st.session_state.get("data_out") in (None, st.session_state.get("data_out_auto")):
        st.session_state["data_out"] = auto
    st.session_state["data_out_auto"] = auto
out = st.text_input(
    "Store folder",
    key="data_out",
    help="named after the model, corpus, site and layers until you type your own",
)
overwrite = st.checkbox(
    "Replace an existing store there",
    value=False,
    key="data_overwrite",
    help="off by default: a folder that already holds a store is left alone",
)
existing = None
try:
    target = inside_root(out, "store folder")
    if is_store(target):
        existing = ActivationStore.open(target)
except WorkbenchError:
    pass  # a folder outside the root is said when Capture is pressed
confirmed = False
if existing is not None:
    m_ = existing.manifest
    what = (
        f"`{out}` already holds a store: {existing.n_rows:,} rows of {m_.get('n_docs')} documents "
        f"at layers {existing.layers} of `{m_.get('model')}`"
    )
    if overwrite:
        st.warning(what + ". Capturing will delete it.", icon=":material/warning:")
        confirmed = st.checkbox("Yes, replace that store", value=False, key="data_confirm")
    else:
        st.info(what + ": change the folder, or tick Replace to overwrite it.")
reason = blocked(
    [
        None if spec is not None else "choose a corpus first",
        None if layers else f"choose at least one layer (0 to {model.n_layers - 1})",
        None if existing is None or overwrite else "the store folder already holds a store",
        None if existing is None or not overwrite or confirmed else "confirm the replacement",
    ]
)
if st.button("Capture", type="primary", disabled=reason is not None, key="data_capture"):
    bar = st.progress(0.0, text="Capturing…")

    def show(p: CaptureProgress) -> None:
        done = p.tokens_done / p.tokens_total if p.tokens_total else 1.0
        bar.progress(
            min(done, 1.0),
            text=f"{p.docs_done}/{p.n_docs} documents · {p.tokens_done:,} tokens · "
            f"{p.tokens_per_s:,.0f} tokens/s",
        )

    def run_capture() -> dict[str, Any]:
        texts = load_corpus(corpus_inside_root(spec or ""), limit=int(limit) or None)
        result = capture(
            model,
            texts,
            layers,
            site=site,
            positions=positions,
            max_tokens=int(max_tokens),
            out=inside_root(out, "store folder"),  # checked inside the run: shown, not raised
            overwrite=overwrite,
            progress=show,
            progress_bar=False,
        )
        return {"result": result}

    ran = history.run(
        RUNS,
        model,
        f"{corpus_tag} at layers {layers}",
        run_capture,
        lambda d: [
            f"{d['result'].rows:,} rows of {d['result'].docs} documents into `{d['result'].path}`"
        ],
    )
    if ran is not None:
        result = ran["result"]
        bar.progress(1.0, text="Done")
        st.session_state[state.STORE_PATH] = str(result.path)
        st.session_state.pop("data_confirm", None)
        st.success(
            f"Captured {result.rows:,} rows of {result.tokens:,} tokens from {result.docs} "
            f"documents at layers {result.layers} in {result.elapsed_s:.1f} s "
            f"({result.tokens_per_s:,.0f} tokens/s)."
        )
    else:
        bar.empty()
why_disabled(reason)

# --------------------------------------------------------------------------- existing store

st.subheader("Activation store")
typed_store = st.text_input(
    "Use an existing store",
    value=st.session_state.get(state.STORE_PATH, ""),
    key="store_in",
    help="a store folder inside the workspace root; the decompose page works on it",
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

history.show(RUNS)
