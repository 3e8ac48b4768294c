"""Ray, the optional scale-out backend: import it lazily and connect with a clear error.

Ray is an extra (``pip install -e .[ray]``); nothing imports it until ``--ray`` is given. An
address is ``auto`` (the cluster started on this machine by ``ray start --head``), ``HOST:PORT``
(a head node's GCS port, 6379 by default), ``ray://HOST:PORT`` (Ray Client), or ``local`` for a
Ray instance started inside this process.
"""

from __future__ import annotations

import socket
from types import ModuleType
from typing import Any

from workbench.errors import WorkbenchError

LOCAL = "local"
CONNECT_TIMEOUT_S = 3.0


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise WorkbenchError(
            "--ray needs Ray, which is not installed: run `pip install -e .[ray]` (or `make setup`)"
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    # ray.init retries an unreachable GCS for minutes; a plain TCP connect says so in seconds.
    where = _host_port(address)
    if where is None:
        raise WorkbenchError(
            f"--ray {address!r} is not a Ray address: give auto, HOST:PORT (e.g. "
            "10.0.0.5:6379) or ray://HOST:PORT, or --ray alone for a local instance"
        )
    try:
        socket.create_connection(where, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise WorkbenchError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with "
            "`ray start --head` and pass the address it prints (or --ray auto on the head node)"
        ) from None


def connect(address: str | None = None) -> ModuleType:
    """Connect to the Ray cluster at ``address`` (see module docstring) and return ``ray``.

    A Ray instance already initialised in this process (a test's, a notebook's) is used as is.
    """
    ray = import_ray()
    address = address or LOCAL
    if address not in (LOCAL, "auto"):
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, logging_level="ERROR")
        else:
            ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkbenchError(
            f"cannot connect to Ray at {address} ({first}); start a cluster with "
            "`ray start --head`, or pass --ray alone for a local instance"
        ) from None
    return ray


def worker_resources(ray: ModuleType) -> tuple[dict[str, Any], str]:
    """Ray options and the device for one model-holding worker: a GPU each when the cluster
    has GPUs, else one CPU."""
    if float(ray.cluster_resources().get("GPU", 0)) >= 1:
        return {"num_gpus": 1}, "cuda"
    return {"num_cpus": 1}, "cpu"


def worker_count(ray: ModuleType, limit: int | None = None) -> int:
    """How many model-holding workers fit: one per GPU, else one per CPU (at most ``limit``)."""
    res = ray.cluster_resources()
    n = int(res.get("GPU", 0)) or int(res.get("CPU", 1))
    return max(1, min(n, limit) if limit else n)
