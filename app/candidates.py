"""Ranked candidate steering vectors on a page: the table, a pick, its warnings, and the send to
the Steer page. Shared by the decompose page and the learned-vectors page, which show the same
:class:`~workbench.decompose.discover.Discovery`."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import state
from app.widgets import blocked, why_disabled
from workbench.decompose.discover import DEFINITIONS, Discovery, over_budget


def kept_label(name: str, method: str, layer: int) -> str:
    """The label a candidate is kept and steered under: its one name, with where it came from."""
    return f"{name} ({method}, layer {layer})"


def send(name: str, vector: Any, coeff: float, *, method: str, layer: int) -> None:
    """Keep ``vector`` and open it on the steer page in norm units at ``coeff`` (every send uses
    the same unit: a multiple of the layer's mean residual norm)."""
    label = kept_label(name, method, layer)
    state.keep_vector(label, vector)
    st.session_state[state.SEND_TO_STEER] = label
    st.session_state[state.SENT_PRESET] = {
        "label": label,
        "layer": layer,
        "units": "norm",
        "coeff": coeff,
    }
    st.session_state["steer_vec_src"] = "Kept or discovered"
    st.session_state["steer_vec_kept"] = label
    st.session_state["steer_layer"] = str(layer)
    st.session_state["steer_units"] = "norm"
    st.session_state["steer_coeff_norm"] = round(float(coeff), 2)
    st.switch_page("views/3_steer.py")


def _col(title: str, key: str, fmt: str | None = None) -> Any:
    if fmt is None:
        return st.column_config.TextColumn(title, help=DEFINITIONS.get(key, ""))
    return st.column_config.NumberColumn(title, help=DEFINITIONS.get(key, ""), format=fmt)


def show(found: Discovery, *, key: str) -> None:
    """The candidates table, then one candidate picked, its warnings and Send to steering.

    ``key`` prefixes every widget key (``dec`` on the decompose page). Columns that no candidate
    fills (store statistics of learned vectors) are left out.
    """
    budget_used = found.settings.damage_budget
    st.caption(
        f"Site: {found.to_json()['layer_convention']}. Damage budget x{budget_used:g}; "
        f"coefficients are multiples of the layer's mean residual norm ({found.mean_norm:.3g})."
    )
    with_store = any(c.between_doc_share is not None for c in found.candidates)
    rows = [
        {
            "name": c.name,
            "warning": "; ".join(found.flags(c)),
            "label": c.label,
            "suggested_coeff": c.suggested_coeff,
            "ppl_ratio": c.ppl_ratio,
            "effect": c.effect,
            "effect_vs_random": c.effect_vs_random,
            **({"between_doc_share": c.between_doc_share} if with_store else {}),
            "score": c.score,
            "inert": c.inert,
            "contrastive_words": ", ".join(c.contrastive_words),
            "completion": c.completions[0] if c.completions else "",
        }
        for c in found.candidates
    ]
    st.dataframe(
        rows,
        hide_index=True,
        key=f"{key}_table",
        column_config={
            "name": st.column_config.TextColumn(
                "name", help="c<component><pos|neg>: the one name of this candidate everywhere"
            ),
            "warning": st.column_config.TextColumn("warning", help=DEFINITIONS["flags"]),
            "label": _col("label", "label"),
            "suggested_coeff": _col("coeff (x resid norm)", "suggested_coeff", "%.3f"),
            "ppl_ratio": _col("perplexity ratio", "ppl_ratio", "x%.2f"),
            "effect": _col("effect (KL, nats)", "effect", "%.3f"),
            "effect_vs_random": _col("effect / random", "effect_vs_random", "%.2f"),
            "between_doc_share": _col("between-doc share", "between_doc_share", "%.2f"),
            "score": _col("score", "score", "%.3g"),
            "inert": st.column_config.CheckboxColumn("inert", help=DEFINITIONS["inert"]),
            "contrastive_words": _col("contrastive words", "contrastive_words"),
            "completion": st.column_config.TextColumn(
                "a steered completion", help="the first sampled completion at suggested_coeff"
            ),
        },
    )
    names = [
        ("⚠ " if found.flags(c) and over_budget(c, budget_used) else "")
        + c.label
        + (" (inert)" if c.inert else "")
        for c in found.candidates
    ]
    pick = st.selectbox(
        "Candidate",
        range(len(names)),
        format_func=lambda i: names[i],
        key=f"{key}_pick",
        help="⚠: over the damage budget",
    )
    cand = found.candidates[pick]
    over = over_budget(cand, budget_used)
    for flag in found.flags(cand):
        (st.error if flag.startswith("over the damage budget") else st.warning)(
            f"{cand.name}: {flag}", icon=":material/warning:"
        )
    anyway = False
    if over and cand.suggested_coeff is not None:
        anyway = st.checkbox(
            f"Send {cand.name} anyway, knowing its text will likely break",
            value=False,
            key=f"{key}_send_anyway_{cand.name}",
        )
    reason = blocked(
        [
            None
            if cand.suggested_coeff is not None
            else "no coefficient kept this candidate within the damage budget",
            None if not over or anyway else "tick “send anyway” to steer with it",
        ]
    )
    if st.button(
        f"Send {cand.name} to steering",
        type="primary",
        key=f"{key}_send",
        disabled=reason is not None,
        help="opens the Steer page with this candidate at its suggested coefficient, in norm units",
    ):
        assert cand.suggested_coeff is not None
        send(cand.name, cand.vector, cand.suggested_coeff, method=found.method, layer=found.layer)
    why_disabled(reason)
