"""The dashboard's entry point: ``workbench app`` runs ``streamlit run app/main.py``.

A landing page and six pages (one file each in ``app/views/``) over the same library functions the CLI uses:
model and data, decompose and discover, learn without labels, steer, overshoot, compose. The app holds no logic of
its own; see :mod:`app.state` for what is cached and kept between reruns, and
:mod:`app.session_store` for what is kept on disk between sessions.

The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder beside the main script
as a legacy multipage app and would run a page opened by URL without this script (no
navigation, no page config).
"""

from __future__ import annotations

import streamlit as st

from app import session_store, state

st.set_page_config(page_title="Steering workbench", page_icon=":material/tune:", layout="wide")

PAGES = [
    st.Page("views/0_start.py", title="Start here", icon=":material/flag:", default=True),
    st.Page("views/1_model_and_data.py", title="Model and data", icon=":material/database:"),
    st.Page("views/2_decompose.py", title="Decompose and discover", icon=":material/scatter_plot:"),
    st.Page("views/2_learn_vectors.py", title="Learn without labels", icon=":material/explore:"),
    st.Page("views/3_steer.py", title="Steer", icon=":material/alt_route:"),
    st.Page("views/4_overshoot.py", title="Overshoot", icon=":material/show_chart:"),
    st.Page("views/5_compose.py", title="Compose", icon=":material/join_inner:"),
]

session_store.restore()  # once per browser session: what the last session kept
page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"Model: `{state.model_name()}`")
    kept = list(state.library())
    st.caption(f"Kept vectors: {', '.join(kept) if kept else 'none yet'}")
    session_store.clear_button()
try:
    page.run()
finally:  # also when the page stops early (st.stop) or reruns
    session_store.save()
