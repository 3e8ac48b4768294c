"""What the dashboard keeps between reruns: the model (a cached resource), results (cached data)
and the session's choices (the store, the dictionary, the vectors the user has kept).

Nothing here computes anything itself: every cached function is a direct call into the library,
cached by its arguments. Vectors and plans are hashed by their contents (:func:`vector_key`), so
the same vector built twice hits the cache.

Environment: ``WORKBENCH_APP_MODEL`` names the model preselected when a session starts (tests
point it at a tiny model folder); ``WORKBENCH_APP_DIR`` is where captures, dictionaries and
saved vectors go (default ``runs/app``), inside the workspace root (:mod:`app.paths`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import streamlit as st

from app.paths import inside_root
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.steer.plan import SteeringPlan
from workbench.vectors.vector import SteeringVector

ENV_MODEL = "WORKBENCH_APP_MODEL"
ENV_DIR = "WORKBENCH_APP_DIR"
ENV_DEVICE = "WORKBENCH_APP_DEVICE"
ENV_DTYPE = "WORKBENCH_APP_DTYPE"
MODEL_DEVICE = "model_device"
MODEL_DTYPE = "model_dtype"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")

# Session-state keys shared between pages.
MODEL_NAME = "model_name"
STORE_PATH = "store_path"
DICTIONARY = "dictionary"
LIBRARY = "vector_library"  # label -> SteeringVector, for steer/overshoot/compose
SEND_TO_STEER = "send_to_steer"  # label of a vector the discovery page sent over
SENT_PRESET = "steer_sent_preset"  # the layer, units and coefficient set for that vector
COMPOSE_ROWS = "compose_rows"

# Small defaults so every page stays usable on a CPU.
DEFAULT_SAMPLES = 4
DEFAULT_NEW_TOKENS = 24


def default_model_name() -> str:
    """The model a new session starts with: ``$WORKBENCH_APP_MODEL`` or the embedded default."""
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def model_name() -> str:
    """The session's model name."""
    if MODEL_NAME not in st.session_state:
        st.session_state[MODEL_NAME] = default_model_name()
    return str(st.session_state[MODEL_NAME])


def workdir() -> Path:
    """Folder for the app's captures, dictionaries and vectors (inside the workspace root)."""
    return inside_root(os.environ.get(ENV_DIR) or "runs/app", "work folder")


def stores() -> list[Path]:
    """Activation stores under the work folder, newest first."""
    from workbench.activations.store import is_store

    folder = workdir() / "stores"
    found = [p for p in folder.iterdir() if is_store(p)] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def slug(text: str) -> str:
    """A file-name-safe short form of ``text`` (for default output folders)."""
    tail = Path(text).name or text
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-")[:60] or "x"


def model_placement() -> tuple[str, str]:
    """The session's ``(device, dtype)``: ``workbench app --device/--dtype`` or auto/float32."""
    if MODEL_DEVICE not in st.session_state:
        st.session_state[MODEL_DEVICE] = os.environ.get(ENV_DEVICE) or "auto"
        st.session_state[MODEL_DTYPE] = os.environ.get(ENV_DTYPE) or "float32"
    return str(st.session_state[MODEL_DEVICE]), str(st.session_state[MODEL_DTYPE])


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_model(name: str, device: str, dtype: str) -> Model:
    return load_model(name, device=device, dtype=dtype)


def get_model(name: str | None = None, placement: tuple[str, str] | None = None) -> Model:
    """The model ``name`` (default: the session's) on the session's device and dtype, loaded
    once per process."""
    name = name or model_name()
    device, dtype = placement or model_placement()
    with st.spinner(f"Loading model {name} ({device}, {dtype})…"):
        return _load_model(name, device, dtype)


def use_model(name: str, placement: tuple[str, str] | None = None) -> Model | None:
    """Load ``name`` (on ``placement``, a ``(device, dtype)``) and only then make it the
    session's model; on failure say why (the session keeps what it had) and return None."""
    from app.widgets import attempt

    placement = placement or model_placement()
    model = attempt(get_model, name.strip(), placement)
    if model is not None:
        st.session_state[MODEL_NAME] = name.strip()
        st.session_state[MODEL_DEVICE], st.session_state[MODEL_DTYPE] = placement
    return model


def back_to_default(key: str) -> None:
    """A button that makes the default model the session's again (shown when it is not)."""
    default = default_model_name()
    if model_name() != default and st.button(f"Back to the default model ({default})", key=key):
        st.session_state[MODEL_NAME] = default
        st.rerun()


def require_model() -> Model:
    """The session's model; if it cannot be loaded, show why, offer the default, stop the page."""
    from app.widgets import attempt

    model = attempt(get_model)
    if model is None:
        back_to_default("model_back_required")
        st.stop()
    return model


def library() -> dict[str, SteeringVector]:
    """The vectors kept in this session, by label."""
    lib: dict[str, SteeringVector] = st.session_state.setdefault(LIBRARY, {})
    return lib


def keep_vector(label: str, vector: SteeringVector) -> str:
    """Add ``vector`` to the session library under ``label``; returns the label."""
    library()[label] = vector
    return label


def keep_run(key: str, model: Model, data: dict[str, Any] | None) -> None:
    """Keep the latest run's ``data`` under session key ``key``, tagged with ``model``'s name.

    ``None`` (a run that failed and said why) keeps nothing.
    """
    if data is not None:
        st.session_state[key] = {"model": model.name, "data": data}


def last_run(key: str, model: Model) -> dict[str, Any]:
    """The data :func:`keep_run` kept under ``key`` for ``model``; without one, stop the page."""
    last = st.session_state.get(key)
    if not last or last["model"] != model.name:
        st.stop()
    data: dict[str, Any] = last["data"]
    return data


# --------------------------------------------------------------------------- hashing for caches


def vector_key(vector: SteeringVector) -> str:
    """A content hash of a vector: tensors, model, width, site and layer norms."""
    h = hashlib.sha256()
    for layer, t in vector.directions.items():
        h.update(f"{layer}:{tuple(t.shape)}".encode())
        h.update(t.contiguous().numpy().tobytes())
    meta = [vector.model, vector.d_model, vector.site, sorted(vector.layer_norms.items())]
    h.update(json.dumps(meta, default=str).encode())
    return h.hexdigest()


def plan_key(plan: SteeringPlan) -> str:
    """A content hash of a plan: each entry's vector hash and settings."""
    rows = [
        [vector_key(e.vector), e.coeff, e.layers, e.position, e.generated, e.units]
        for e in plan.entries
    ]
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


HASH_FUNCS: dict[Any, Any] = {SteeringVector: vector_key, SteeringPlan: plan_key}
