"""Landing page: the five steps of the workflow, in order, with what each page is for."""

from __future__ import annotations

import streamlit as st

from app import state
from app.widgets import how_to_read

st.title("Steering workbench")
how_to_read(
    "Start here. Steering adds a direction (a vector) to the model's internal activations while "
    "it writes, to push its text somewhere: happier, more formal, about weddings. The five pages "
    "on the left are the steps, in order; each one starts with a line like this on how to read it."
)

STEPS = [
    (
        "views/1_model_and_data.py",
        "1. Model and data",
        "Choose the model and a corpus, and capture its activations at some layers (a store).",
    ),
    (
        "views/2_decompose.py",
        "2. Decompose and discover",
        "Split a store into components, see what each responds to, and rank them as steering "
        "vectors calibrated not to break the model. Send the one you like to steering.",
    ),
    (
        "views/2_learn_vectors.py",
        "2b. Learn without labels (instead of 2)",
        "No corpus to decompose? Learn the directions that most move a later layer (MELBO or the "
        "Jacobian) on a set of prompts, ranked and calibrated the same way.",
    ),
    (
        "views/3_steer.py",
        "3. Steer",
        "Unsteered and steered completions side by side, and which tokens steering makes more or "
        "less likely. Any vector works here: a prompt pair, two text sets, a file, a candidate.",
    ),
    (
        "views/4_overshoot.py",
        "4. Overshoot",
        "Sweep the coefficient: where steering starts working, where it works best, and where it "
        "breaks the model; and whether it beats control vectors.",
    ),
    (
        "views/5_compose.py",
        "5. Compose",
        "Apply several vectors at once and see whether each keeps its effect.",
    ),
]
for page, title, text in STEPS:
    with st.container(border=True):
        st.page_link(page, label=title)
        st.caption(text)

st.caption(
    f"Session model: `{state.model_name()}` (change it on Model and data). Every page is a thin "
    "layer over the same library functions as the `workbench` command line, so the numbers match "
    "its output and reports. A field that is not valid says why beside it and keeps its button "
    "off; each page keeps a history of its runs."
)
