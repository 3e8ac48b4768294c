"""The dashboard remembers: the session is saved under the work folder and restored on reload.

What is kept (``session/`` in the work folder, inside the workspace root): the model's name,
device and precision, the chosen store, the fitted dictionary's settings (the page refits it
from them), the ranked candidates of both discovery pages, the kept vectors, each page's latest
result and its run history. Vectors are written as safetensors files (named by their contents)
and everything else as one JSON file, so nothing is pickled: the few dataclasses a session holds
(:data:`DATACLASSES`) are written field by field and rebuilt by name from that list only. A key
whose value cannot be written that way is skipped and not restored. A reload
of the page, or the next ``workbench app`` on the same work folder, restores the saved session
once per browser session; "Clear session" deletes it.

Several browser tabs on one work folder share the saved session: the last one to change
something writes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app import state
from app.history import Run
from workbench.decompose.component_stats import DocExample
from workbench.decompose.discover import Candidate, Discovery
from workbench.decompose.trials import TrialSettings
from workbench.io import remove, write_json
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.vector import SteeringVector

FOLDER = "session"
FILE = "session.json"
RESTORED = "_session_restored"
SAVED = "_session_saved"  # the JSON last written, to skip writes that change nothing
KEYS = (
    state.MODEL_NAME,
    state.MODEL_DEVICE,
    state.MODEL_DTYPE,
    state.STORE_PATH,
    state.LIBRARY,
    "decompose_fitted",
    "decompose_candidates",
    "learn_found",
)
SUFFIXES = ("_last", "_history")
FORMAT = "workbench.app_session/1"


_INIT = [f for f in fields(PlanEntry) if f.init]
# Dataclasses kept field by field (a discovery's candidates), rebuilt only from this list.
DATACLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (Discovery, Candidate, DocExample, TrialSettings)
}


class _Skip(Exception):
    """A value that cannot be kept as JSON plus safetensors."""


def folder() -> Path:
    """Where the session is kept: ``session/`` in the work folder."""
    return state.workdir() / FOLDER


def _kept_keys() -> list[str]:
    names = [str(k) for k in st.session_state]
    return [k for k in names if k in KEYS or k.endswith(SUFFIXES)]


def _encode(value: Any, where: Path) -> Any:
    if isinstance(value, SteeringVector):
        name = f"{state.vector_key(value)[:20]}.safetensors"
        path = where / "vectors" / name
        if not path.exists():
            value.save(path)
        return {"__vector__": f"vectors/{name}"}
    if isinstance(value, Run):
        return {"__run__": asdict(value)}
    if isinstance(value, SteeringPlan):
        return {"__plan__": [_encode(e, where) for e in value.entries]}
    if isinstance(value, PlanEntry):
        return {"__entry__": {f.name: _encode(getattr(value, f.name), where) for f in _INIT}}
    if is_dataclass(value) and DATACLASSES.get(type(value).__name__) is type(value):
        kept = {f.name: _encode(getattr(value, f.name), where) for f in fields(value) if f.init}
        return {"__dataclass__": type(value).__name__, "fields": kept}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Skip
        return {k: _encode(v, where) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    raise _Skip


def _decode(value: Any, where: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__vector__"}:
            return SteeringVector.load(where / value["__vector__"])
        if set(value) == {"__run__"}:
            known = {f.name for f in fields(Run)}
            return Run(**{k: v for k, v in value["__run__"].items() if k in known})
        if set(value) == {"__plan__"}:
            return SteeringPlan([_decode(e, where) for e in value["__plan__"]])
        if set(value) == {"__entry__"}:
            return PlanEntry(**{k: _decode(v, where) for k, v in value["__entry__"].items()})
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, where) for v in value["__tuple__"])
        if set(value) == {"__dataclass__", "fields"}:
            cls = DATACLASSES[value["__dataclass__"]]  # KeyError: not restored (see restore)
            return cls(**{k: _decode(v, where) for k, v in value["fields"].items()})
        return {k: _decode(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    return value


def save() -> None:
    """Write the kept part of the session (only when it changed)."""
    where = folder()
    kept: dict[str, Any] = {}
    for key in _kept_keys():
        try:
            kept[key] = _encode(st.session_state[key], where)
        except _Skip:
            continue
    text = json.dumps({"format": FORMAT, "session": kept}, sort_keys=True, default=str)
    if st.session_state.get(SAVED) == text:
        return
    write_json(where / FILE, json.loads(text))
    st.session_state[SAVED] = text


def restore() -> None:
    """Once per browser session: put the saved session back (keys the session already has are
    left alone). A damaged or foreign session file is ignored, with a note."""
    if st.session_state.get(RESTORED):
        return
    st.session_state[RESTORED] = True
    path = folder() / FILE
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        restored = {k: _decode(v, path.parent) for k, v in data["session"].items()}
    except Exception as e:  # noqa: BLE001  (a saved session must never stop the dashboard)
        st.warning(
            f"The saved session in {path.parent} could not be restored ({e}); starting fresh."
        )
        return
    for key, value in restored.items():
        st.session_state.setdefault(key, value)


def clear_button() -> None:
    """A sidebar button that forgets the session: the saved files and this tab's state."""
    if st.button("Clear session", key="session_clear", help=f"delete {folder()} and start over"):
        remove(folder())
        for key in list(st.session_state):
            del st.session_state[key]
        st.session_state[RESTORED] = True  # nothing to restore any more
        st.rerun()
