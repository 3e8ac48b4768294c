"""Small render helpers shared by the pages: error display, coloured tokens, marked contexts.

These only turn library results into HTML or Streamlit elements; they compute nothing.
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

from workbench.errors import WorkbenchError

T = TypeVar("T")

UNEXPECTED = "Unexpected error"


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call ``fn``; show a user error (or an unexpected one) as a message and return None.

    :class:`WorkbenchError` messages already say what is wrong and how to fix it, so they are
    shown as they are. Anything else is a bug: its message is shown with the traceback folded
    away, so the page stays usable.
    """
    try:
        return fn(*args, **kwargs)
    except WorkbenchError as e:
        st.error(str(e), icon=":material/error:")
    except Exception as e:  # a bug, not a user error: say so without a wall of traceback
        st.error(f"{UNEXPECTED} ({type(e).__name__}): {e}", icon=":material/bug_report:")
        with st.expander("Details"):
            st.code("".join(traceback.format_exception(e)), language="text")
    return None


def preset(key: str, default: Any) -> None:
    """Give the widget ``key`` its default through session state, so that another page can
    preset it (e.g. discovery sending a candidate to the steer page) without a conflict."""
    if key not in st.session_state:
        st.session_state[key] = default


def parse_numbers(text: str, what: str) -> list[float]:
    """``"0, 1, 2.5"`` -> ``[0.0, 1.0, 2.5]``; a one-line WorkbenchError for anything else."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise WorkbenchError(
            f"{what} {text!r} is not a list of numbers; write e.g. 0, 1, 2, 4"
        ) from None
    if not values:
        raise WorkbenchError(f"no {what} given; write e.g. 0, 1, 2, 4")
    return values


# --------------------------------------------------------------------------- coloured text


def _rgba(delta: float, scale: float) -> str:
    """Green for a positive change, red for a negative one; opacity grows with |delta|."""
    strength = min(abs(delta) / scale, 1.0) if scale > 0 else 0.0
    rgb = "22, 163, 74" if delta >= 0 else "220, 38, 38"
    return f"rgba({rgb}, {0.08 + 0.72 * strength:.3f})"


def token_passage_html(
    tokens: Sequence[str],
    deltas: Sequence[float],
    *,
    prefix: str = "",
    scale: float | None = None,
    details: Sequence[str] | None = None,
) -> str:
    """HTML for a passage whose tokens are shaded by ``deltas`` (green up, red down).

    ``scale`` is the |delta| at full colour (default: the largest |delta|). ``details`` are
    tooltips, one per token.
    """
    top = max((abs(d) for d in deltas), default=0.0)
    scale = scale if scale is not None else top
    spans = [f'<span style="color:#6b7280">{html.escape(prefix)}</span>'] if prefix else []
    for i, (tok, d) in enumerate(zip(tokens, deltas, strict=True)):
        tip = details[i] if details is not None else f"{d:+.3f}"
        text = html.escape(tok).replace("\n", "↵<br>")
        spans.append(
            f'<span title="{html.escape(tip)}" style="background:{_rgba(d, scale)};'
            f'border-radius:3px;padding:1px 0">{text}</span>'
        )
    body = "".join(spans)
    return (
        '<div class="wb-passage" style="line-height:1.9;font-size:1.02rem;'
        f'white-space:pre-wrap">{body}</div>'
    )


def marked_context_html(left: str, token: str, right: str) -> str:
    """A context with its token highlighted."""
    return (
        f'<span style="color:#4b5563">{html.escape(left)}</span>'
        f'<mark style="background:#fde68a;padding:0 2px;border-radius:3px">'
        f"{html.escape(token)}</mark>"
        f'<span style="color:#4b5563">{html.escape(right)}</span>'
    )


def completion_box(text: str, *, prompt: str = "", kind: str = "") -> None:
    """One completion in a bordered box, the prompt in grey before it.

    ``kind`` (e.g. ``steered``) becomes a CSS class ``wb-<kind>`` so tests can find the box.
    """
    body = html.escape(text) if text.strip() else "<i>(empty)</i>"
    with st.container(border=True):
        st.html(
            f'<div class="wb-completion wb-{html.escape(kind)}" style="white-space:pre-wrap">'
            f'<span style="color:#6b7280">{html.escape(prompt)}</span>{body}</div>'
        )


def token_chips(tokens: Sequence[str]) -> str:
    """Tokens as inline code chips (visible whitespace)."""
    return " ".join(f"`{repr(t)[:30]}`" for t in tokens)
