"""Starting or joining Ray, with this project's defaults (loopback, offline workers)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# What every Ray worker process gets: offline habits (../shared/ENV.md) and quiet logs.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    # Train V2 re-logs every print() of a worker, so each progress line showed twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Train's controller polls its workers every 2 s by default: each finished run then sat
    # ~2-3 s before its trial could end. Polling a handful of local actors is cheap.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}


class ClusterError(ValueError):
    """The Ray cluster cannot run what was asked (no GPUs for a GPU run, an address that does
    not answer): bad input, named in the message, found before any training starts."""


def init_ray(
    address: str | None = None, num_cpus: int | None = None, verbose: bool = True
) -> dict[str, float]:
    """Join the cluster at ``address`` (or $RAY_ADDRESS, or one started with `ray start`), else
    start a local Ray bound to 127.0.0.1. Returns the cluster's resources.

    ``verbose=False``: Ray logs only warnings here and does not forward the workers' output
    to this process (it stays in Ray's session logs, /tmp/ray/session_latest/logs).
    WORKER_ENV goes into this process's environment (unless already set), which a local Ray's
    workers inherit; on a cluster the job's runtime env sets it (cluster/runtime_env.yaml).
    Passing it as a runtime_env here would clash with a `ray job submit` runtime env.
    """
    import ray

    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        quiet = {} if verbose else {"logging_level": logging.WARNING, "log_to_driver": False}
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            try:
                ray.init(address=address, **quiet)
            except ConnectionError as exc:
                raise ClusterError(
                    f"Ray cluster {address!r} (--address or $RAY_ADDRESS): cannot connect: {exc}"
                ) from None
        else:
            # A new local Ray of our own. address="auto" first would also join the private Ray
            # of any other process on this machine and die with it.
            stale = stale_cluster_address()
            if stale:
                logger.warning(
                    "ignoring %s: it names the Ray head %s, which does not answer (stopped "
                    "without `ray stop`?); starting a local Ray",
                    current_cluster_file(),
                    stale,
                )
            local = {
                "num_cpus": num_cpus or os.cpu_count(),
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "_node_ip_address": "127.0.0.1",
                **quiet,
            }
            try:
                # "local": never join the dead head named by a stale file (that hangs)
                ray.init(**({"address": "local"} if stale else {}), **local)
            except (ConnectionError, RuntimeError, ValueError):
                if stale:
                    raise
                # a `ray start` cluster on this machine claims it
                ray.init(address="auto", **quiet)
    return ray.cluster_resources()


def current_cluster_file() -> Path:
    """Where `ray start` records its head's address (`ray stop` removes it); a plain
    ray.init() with no address joins the cluster it names.

    Ray has no public API for this path: it is $RAY_TMPDIR, else $TMPDIR (Linux), else /tmp,
    then ray/ray_current_cluster (tests/train/test_cluster.py checks it against Ray's own).
    """
    if "RAY_TMPDIR" in os.environ:
        base = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        base = os.environ["TMPDIR"]
    elif sys.platform.startswith(("linux", "darwin")):
        base = "/tmp"
    else:
        base = tempfile.gettempdir()
    return Path(base) / "ray" / "ray_current_cluster"


def stale_cluster_address(path: Path | None = None, timeout: float = 1.0) -> str | None:
    """The head address in ``path`` (default: current_cluster_file()) when nothing accepts
    connections there, else None."""
    path = path or current_cluster_file()
    try:
        address = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError:
        return address
