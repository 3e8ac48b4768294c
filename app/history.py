"""A run history per page: every run pressed in this session, newest first, one expander each.

A page runs its action through :func:`run`: a run that works becomes the page's current result
(kept under the page's key, as :func:`app.state.keep_run` always did), a run that fails is
recorded with its message and leaves the last good result where it was. :func:`show` draws the
history; what each entry shows is the page's ``summary`` of its data, computed once when the run
ends (so drawing the history never runs the model again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app import state
from app.widgets import attempt_why
from workbench.model.load import Model

MAX_RUNS = 12


@dataclass
class Run:
    """One press of a page's action button."""

    n: int
    label: str
    model: str
    ok: bool
    summary: list[str] = field(default_factory=list)
    error: str | None = None
    at: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))


def runs(key: str) -> list[Run]:
    """The page's runs, oldest first."""
    found: list[Run] = st.session_state.setdefault(f"{key}_history", [])
    return found


def run(
    key: str,
    model: Model,
    label: str,
    fn: Callable[[], dict[str, Any]],
    summary: Callable[[dict[str, Any]], list[str]],
) -> dict[str, Any] | None:
    """Run ``fn`` (its error shown as :func:`app.widgets.attempt` shows it) and record the run.

    A good run's data becomes the page's current result under ``key``; a failed run changes
    nothing but the history.
    """
    data, error = attempt_why(fn)
    done = runs(key)
    n = (done[-1].n + 1) if done else 1
    if data is None:
        done.append(Run(n, label, model.name, False, error=error or "failed"))
    else:
        state.keep_run(key, model, data)
        done.append(Run(n, label, model.name, True, summary=summary(data)))
    del done[:-MAX_RUNS]
    return data


def show(key: str) -> None:
    """The page's run history, newest first: one expander per run, failed ones marked."""
    done = runs(key)
    if not done:
        return
    st.subheader("Run history")
    st.caption(
        "Every run of this page in this session, newest first. The result shown above is the "
        "newest run that worked; a failed run never replaces it."
    )
    newest_good = next((r.n for r in reversed(done) if r.ok), None)
    for r in reversed(done):
        mark = "current result" if r.n == newest_good else ("failed" if not r.ok else "earlier")
        icon = ":material/check_circle:" if r.ok else ":material/error:"
        with st.expander(f"Run {r.n} · {r.at} · {r.label} · {mark}", icon=icon):
            st.caption(f"model `{r.model}`")
            if r.error:
                st.markdown(f":red[{r.error}]")
            for line in r.summary:
                st.markdown(line)
