"""Starting or joining Ray, with this project's defaults (loopback, offline workers)."""

from __future__ import annotations

import os
from typing import Any

# What every Ray worker process gets: offline habits (../shared/ENV.md) and quiet logs.
WORKER_ENV = {
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    # Train V2 re-logs every print() of a worker, so each progress line showed twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Join the cluster at ``address`` (or $RAY_ADDRESS, or one started with `ray start`), else
    start a local Ray bound to 127.0.0.1. Returns the cluster's resources."""
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": WORKER_ENV}, "log_to_driver": True}
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:
            try:  # a cluster started here with `ray start --head`
                ray.init(address="auto", **kwargs)
            except (ConnectionError, RuntimeError, ValueError):
                ray.init(
                    num_cpus=num_cpus or os.cpu_count(),
                    include_dashboard=True,
                    dashboard_host="127.0.0.1",
                    _node_ip_address="127.0.0.1",
                    **kwargs,
                )
    return ray.cluster_resources()
