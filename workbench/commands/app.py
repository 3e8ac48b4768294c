"""``workbench app``: start the dashboard (``streamlit run app/main.py``), local-only by default.

The dashboard is a thin layer over the same library functions as the other verbs. It binds to
127.0.0.1 unless ``--host`` says otherwise (it runs models and writes files on this machine, so
exposing it is the user's explicit choice), and runs headless: it prints its address instead of
opening a browser. It works inside one workspace root (``--root``, default the current folder):
every corpus, store, vector and output path a page reads or writes must lie inside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

NAME = "app"
HELP = "start the dashboard in a local web server (Streamlit)"

ENV_MODEL = "WORKBENCH_APP_MODEL"  # read by app/state.py
ENV_DIR = "WORKBENCH_APP_DIR"
ENV_ROOT = "WORKBENCH_APP_ROOT"  # read by app/paths.py
ENV_DEVICE = "WORKBENCH_APP_DEVICE"  # read by app/state.py
ENV_DTYPE = "WORKBENCH_APP_DTYPE"


def main_script() -> Path:
    """Path of the dashboard's entry script, ``app/main.py``."""
    # Found, not imported: the dashboard runs in its own Streamlit process, and the CLI sits
    # beside the app in the layering, not above it.
    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None:
        raise WorkbenchError(
            "the dashboard package 'app' is not installed; reinstall with `pip install -e .`"
        )
    return Path(spec.origin).resolve().parent / "main.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"model preselected in the app (default: ${ENV_MODEL} or the embedded default)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help=f"folder for captures and vectors, inside --root (default runs/app; ${ENV_DIR})",
    )
    parser.add_argument(
        "--root",
        default=".",
        help="workspace root: the dashboard reads and writes only inside this folder "
        "(default: the current folder)",
    )


def workspace(args: argparse.Namespace) -> dict[str, str]:
    """The environment entries that confine the dashboard: the resolved root and work folder.

    Refuses a root that is not a folder and a ``--workdir`` outside the root.
    """
    root = Path(args.root).expanduser().resolve()
    if not root.is_dir():
        raise WorkbenchError(f"--root {args.root} is not a folder; give an existing folder")
    env = {ENV_ROOT: str(root)}
    if args.workdir:
        work = Path(args.workdir).expanduser()
        work = (work if work.is_absolute() else root / work).resolve()
        if work != root and root not in work.parents:
            raise WorkbenchError(
                f"--workdir {args.workdir} is outside --root {root}; choose a folder inside it"
            )
        env[ENV_DIR] = str(work)
    return env


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args``."""
    if not 1 <= args.port <= 65535:
        raise WorkbenchError(f"--port {args.port} is not a port number; give 1..65535")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(main_script()),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    cmd = streamlit_command(args)
    confined = workspace(args)
    env = {**os.environ, **confined}
    if args.model:
        env[ENV_MODEL] = args.model
    for key, value in ((ENV_DEVICE, args.device), (ENV_DTYPE, args.dtype)):
        if value:
            env[key] = value
    url = f"http://{args.host}:{args.port}"
    print(
        f"workbench app: serving the dashboard at {url} over {confined[ENV_ROOT]} "
        "(Ctrl-C stops it)",
        file=sys.stderr,
    )
    # Started in the root, so relative paths typed in a page mean the same as in app/paths.py.
    proc = subprocess.Popen(cmd, env=env, cwd=confined[ENV_ROOT])
    # A terminated `workbench app` must not leave the server behind.
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C; let it finish shutting down
        code = 0
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == -signal.SIGTERM:
        code = 0
    if code != 0:
        raise WorkbenchError(
            f"the dashboard server stopped with status {code}; is port {args.port} in use? "
            "try another --port"
        )
    return {"url": url, "status": code}


def render(result: dict[str, Any]) -> str:
    return f"dashboard at {result['url']} stopped"
