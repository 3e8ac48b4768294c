"""``workbench app``: start the dashboard (``streamlit run app/main.py``), local-only by default.

The dashboard is a thin layer over the same library functions as the other verbs. It binds to
127.0.0.1 unless ``--host`` says otherwise (it runs models and writes files on this machine, so
exposing it is the user's explicit choice), and runs headless: it prints its address instead of
opening a browser.
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
        help=f"folder for captures and vectors (default runs/app; ${ENV_DIR})",
    )


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
    env = dict(os.environ)
    if args.model:
        env[ENV_MODEL] = args.model
    if args.workdir:
        env[ENV_DIR] = args.workdir
    url = f"http://{args.host}:{args.port}"
    print(f"workbench app: serving the dashboard at {url} (Ctrl-C stops it)", file=sys.stderr)
    proc = subprocess.Popen(cmd, env=env)
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
