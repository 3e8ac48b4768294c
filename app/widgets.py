"""Small render helpers shared by the pages: error display, coloured tokens, marked contexts.

These only turn library results into HTML or Streamlit elements; they compute nothing.
"""

from __future__ import annotations

import html
import re
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from workbench.errors import WorkbenchError

T = TypeVar("T")

UNEXPECTED = "Unexpected error"

# The library's advice names command-line options; on a page the same setting is a field.
FIELDS = {
    "--layers": "Layers",
    "--layer": "Layer",
    "--max-norm-ratio": "Drop rows over x median norm",
    "--scale": "Fit in the space",
    "--param": "Hyperparameters",
    "--k": "Components (k)",
    "--coeffs": "Coefficients",
    "--coeff": "Coefficient",
    "--overwrite": "Replace an existing store there",
    "--out": "Store folder",
    "--damage-budget": "Damage budget",
    "--prompts": "Prompts",
    "--n-prompts": "Prompts used",
    "--off-target": "Off-target text (damage)",
    "--on-target": "On-target text",
    "--neutral": "Neutral prompts (KL)",
    "--controls": "Matched controls",
    "--units": "Units",
    "--model": "Model",
    "--target-words": "Target words",
}
_FLAG = re.compile(r"`?(--[a-z][a-z-]*)`?")


def page_words(message: str) -> str:
    """``message`` with the command-line options it names turned into this dashboard's fields
    (``--layers`` -> the "Layers" field); options without a field stay as they are."""

    def field(m: re.Match[str]) -> str:
        name = FIELDS.get(m.group(1))
        return f"the “{name}” field" if name else m.group(0)

    return _FLAG.sub(field, message)


def attempt_why(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str | None]:
    """Like :func:`attempt`, also returning the message shown (None when ``fn`` succeeded)."""
    try:
        return fn(*args, **kwargs), None
    except WorkbenchError as e:
        message = page_words(str(e))
        st.error(message, icon=":material/error:")
    except Exception as e:  # a bug, not a user error: say so without a wall of traceback
        message = f"{UNEXPECTED} ({type(e).__name__}): {e}"
        st.error(message, icon=":material/bug_report:")
        with st.expander("Details"):
            st.code("".join(traceback.format_exception(e)), language="text")
    return None, message


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call ``fn``; show a user error (or an unexpected one) as a message and return None.

    :class:`WorkbenchError` messages already say what is wrong and how to fix it, so they are
    shown as they are (command-line options named in them become this page's fields). Anything
    else is a bug: its message is shown with the traceback folded away, so the page stays usable.
    """
    return attempt_why(fn, *args, **kwargs)[0]


def how_to_read(text: str) -> None:
    """The plain-words line at the top of a page: what it shows and how to read it."""
    st.info(text, icon=":material/menu_book:")


def progress_sink(placeholder: Any) -> Callable[[str], None]:
    """A sink for :func:`dictionaries.progress.reporting` that writes each progress line into
    ``placeholder``; lines come from the fit's heartbeat thread, which is given this page's
    Streamlit context so its writes reach the browser."""
    ctx = get_script_run_ctx()

    def sink(line: str) -> None:
        add_script_run_ctx(threading.current_thread(), ctx)
        placeholder.caption(f":material/hourglass_top: {line}")

    return sink


def layer_field(
    label: str, key: str, n_layers: int, default: int, *, where: Any = None, help: str = ""
) -> int | None:
    """A layer typed as text: the layer, or None after saying inline why the text is not one.

    A number input would keep showing an out-of-range value while the page used the last valid
    one; here the page sees exactly what is typed and the action waits for a valid layer.
    """
    box = where if where is not None else st
    preset(key, str(default))
    if not isinstance(st.session_state[key], str):  # set by another page as a number
        st.session_state[key] = str(st.session_state[key])
    text = str(box.text_input(label, key=key, help=help or f"a layer from 0 to {n_layers - 1}"))
    try:
        value = int(text.strip())
    except ValueError:
        box.error(
            f"layer {text.strip()!r} is not a whole number; give one from 0 to {n_layers - 1}"
        )
        return None
    if not 0 <= value < n_layers:
        box.error(f"layer {value} is outside this model's layers 0 to {n_layers - 1}")
        return None
    return value


def blocked(reasons: Sequence[str | None]) -> str | None:
    """The first reason an action cannot run yet (shown beside its disabled button), or None."""
    return next((r for r in reasons if r), None)


def why_disabled(reason: str | None) -> None:
    """Say inline why the button above is disabled."""
    if reason:
        st.caption(f":material/block: {reason}")


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


def token_text(token: str) -> str:
    """A token as a reader can see it: spaces as ␣, new lines as ↵, an empty token as ∅ and a
    partial UTF-8 byte (decoded as �) as ‹byte›."""
    if not token:
        return "∅"
    shown = token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return shown.replace("\ufffd", "‹byte›")


def token_chips(tokens: Sequence[str]) -> str:
    """Tokens as inline code chips (visible whitespace, no blank or � chips)."""
    return " ".join(f"`{token_text(t)[:30]}`" for t in tokens)
