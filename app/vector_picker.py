"""The vector chooser shared by the steer, overshoot and compose pages.

:func:`vector_picker` draws the inputs for one vector source and returns a
:class:`VectorChoice`: a label and a ``build()`` that calls the library (cached) when the page's
button is pressed, so typing in a field never runs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from app import results, state
from app.paths import corpus_inside_root, inside_root
from app.widgets import preset
from workbench.activations.batches import ROW_POSITIONS
from workbench.errors import WorkbenchError, check
from workbench.model.load import Model
from workbench.vectors.vector import SteeringVector

SOURCES = ("Prompt pair", "Two text sets", "Saved file", "Kept or discovered", "Random control")
_PAIR = "a prompt pair (typed here)"


@dataclass
class VectorChoice:
    """What the user picked: a short label and how to build the vector."""

    label: str
    build: Callable[[], SteeringVector]
    # Layer the vector is made at (None: its own layers, which the plan may move).
    made_at: int | None = None


def _pair_inputs(key: str, pos: str = "Love", neg: str = "Hate") -> tuple[str, str]:
    c1, c2 = st.columns(2)
    p = c1.text_input("Positive prompt", value=pos, key=f"{key}_pos")
    n = c2.text_input("Negative prompt", value=neg, key=f"{key}_neg")
    return p, n


def _kept_vector(label: str) -> SteeringVector:
    kept = state.library()
    check(label in kept, f"no kept vector named {label!r}; keep or send one first")
    return kept[label]


def vector_picker(
    model: Model, key: str, layer: int, *, default: str | None = None
) -> VectorChoice:
    """Inputs for one steering vector; ``layer`` is where new vectors are built."""
    kept = list(state.library())
    preset(f"{key}_src", default if default in SOURCES else SOURCES[0])
    source = st.radio("Vector from", SOURCES, horizontal=True, key=f"{key}_src")
    name = model.name
    if source == "Prompt pair":
        pos, neg = _pair_inputs(key)
        return VectorChoice(
            f"{pos!r}-{neg!r}@{layer}",
            lambda: results.vector_from_prompts(name, pos, neg, layer),
            layer,
        )
    if source == "Two text sets":
        names = [f"builtin:{c}" for c in results.corpora()]
        c1, c2, c3 = st.columns([2, 2, 1])
        pos_set = c1.selectbox(
            "Positive texts",
            names,
            index=names.index("builtin:happy"),
            key=f"{key}_pset",
            accept_new_options=True,
        )
        neg_set = c2.selectbox(
            "Negative texts",
            names,
            index=names.index("builtin:sad"),
            key=f"{key}_nset",
            accept_new_options=True,
        )
        positions = c3.selectbox(
            "Positions", ROW_POSITIONS, index=ROW_POSITIONS.index("last"), key=f"{key}_ppos"
        )
        return VectorChoice(
            f"{pos_set.removeprefix('builtin:')}-{neg_set.removeprefix('builtin:')}@{layer}",
            lambda: results.vector_from_datasets(
                name,
                corpus_inside_root(pos_set, "positive texts"),
                corpus_inside_root(neg_set, "negative texts"),
                layer,
                positions,
            ),
            layer,
        )
    if source == "Saved file":
        path = st.text_input(
            "Vector file (.safetensors)", key=f"{key}_file", placeholder="runs/love.safetensors"
        ).strip()
        label = state.slug(path).removesuffix(".safetensors") if path else "file"
        return VectorChoice(label, lambda: _file_vector(path))
    if source == "Kept or discovered":
        if not kept:
            st.info("No kept vectors yet: keep one here, or send a candidate from discovery.")
        if st.session_state.get(f"{key}_kept") not in kept:
            st.session_state.pop(f"{key}_kept", None)  # a label from an earlier session
        label = st.selectbox("Kept vector", kept, key=f"{key}_kept") if kept else ""
        return VectorChoice(label or "kept", lambda: _kept_vector(label))
    # Random control
    matched = st.selectbox("Norm-matched to", [_PAIR, *kept], key=f"{key}_rbase")
    seed = int(st.number_input("Random seed", min_value=0, value=0, key=f"{key}_rseed"))
    if matched == _PAIR:
        pos, neg = _pair_inputs(f"{key}_r")
        return VectorChoice(
            f"random({pos!r}-{neg!r})#{seed}@{layer}",
            lambda: results.vector_random(results.vector_from_prompts(name, pos, neg, layer), seed),
            layer,
        )
    return VectorChoice(
        f"random({matched})#{seed}",
        lambda: results.vector_random(_kept_vector(matched), seed),
    )


def _file_vector(path: str) -> SteeringVector:
    if not path:
        raise WorkbenchError("no vector file given; type the path of a .safetensors vector")
    return results.load_vector(str(inside_root(path, "vector file")))
