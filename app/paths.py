"""The dashboard's workspace root: every path a page reads or writes must lie inside it.

The dashboard is a web page that can name files on the machine it runs on, so it is confined to
one folder: ``workbench app --root DIR`` (default: the folder it was started in), passed to the
Streamlit process as ``$WORKBENCH_APP_ROOT``. Relative paths are taken from the root; symbolic
links are followed before the check, so a link inside the root cannot lead out of it.

Example:
    >>> inside_root("corpora/mine.txt", "corpus")  # doctest: +SKIP
    PosixPath('/home/me/work/corpora/mine.txt')
    >>> inside_root("/etc/passwd", "corpus")  # doctest: +SKIP
    WorkbenchError: corpus /etc/passwd is outside the workspace root /home/me/work; ...
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.outputs import claim_output
from workbench.vectors.vector import SteeringVector

ENV_ROOT = "WORKBENCH_APP_ROOT"
BUILTIN = "builtin:"


def root() -> Path:
    """The workspace root, resolved: ``$WORKBENCH_APP_ROOT`` or the current folder."""
    return Path(os.environ.get(ENV_ROOT) or ".").expanduser().resolve()


def inside_root(path: str | os.PathLike[str], what: str = "path") -> Path:
    """``path`` resolved against the workspace root; a :class:`WorkbenchError` if it lies outside.

    ``what`` names the path in the message (``"corpus"``, ``"store folder"``, ...).
    """
    base = root()
    text = str(path).strip()
    if not text:
        raise WorkbenchError(f"no {what} given; type a path inside the workspace root {base}")
    p = Path(text).expanduser()
    resolved = (p if p.is_absolute() else base / p).resolve()
    if resolved != base and base not in resolved.parents:
        raise WorkbenchError(
            f"{what} {text} is outside the workspace root {base}; use a path inside it, or "
            "start the dashboard with `workbench app --root DIR` over the folder you need"
        )
    return resolved


def corpus_inside_root(spec: str, what: str = "corpus") -> str:
    """A corpus spec for the library: ``builtin:NAME`` as it is, a file path checked by
    :func:`inside_root`."""
    if spec.strip().startswith(BUILTIN):
        return spec.strip()
    return str(inside_root(spec, what))


def save_vector(vector: SteeringVector, dest: str | os.PathLike[str]) -> Path:
    """Save ``vector`` at ``dest`` inside the root, under the CLI's output policy: a vector file
    the workbench wrote earlier is replaced, any other file or a folder is refused."""
    path = inside_root(dest, "vector file")
    with claim_output(path, kind="vector", overwrite=True, file=True):
        return vector.save(path)
