"""Scale an autoscaling Ray cluster to N GPUs before a search starts, or let it shrink again.

`python -m emseg_search.run` sizes its concurrent trials from the GPUs present when it starts
(and refuses a GPU space when there are none), so on a cluster whose GPU workers start at 0 ask
for them first. Runs on the head node, e.g. for cluster/gpu-cluster.yaml:

    ray exec cluster/gpu-cluster.yaml "python ~/emseg-search/cluster/request_gpus.py 4"
    ray exec cluster/gpu-cluster.yaml "python ~/emseg-search/cluster/request_gpus.py --release"

The request (ray.autoscaler.sdk.request_resources) persists until replaced: idle GPU workers are
only removed after `--release`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Request ``gpus`` one-GPU bundles and wait until the cluster has them; 0 on success."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gpus", type=int, nargs="?", help="GPUs the cluster should have")
    p.add_argument("--release", action="store_true", help="withdraw the request (scale down)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds to wait (default 1200)")
    p.add_argument("--address", default="auto", help="Ray address (default: this node's cluster)")
    args = p.parse_args(argv)
    if args.release == (args.gpus is not None):
        p.error("give either a number of GPUs or --release")
    if args.gpus is not None and args.gpus < 1:
        p.error("gpus must be >= 1")

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # cluster/gpu-cluster.yaml enables it
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address=args.address, logging_level="WARNING")
    if args.release:
        request_resources(bundles=[])
        print("request withdrawn: idle workers go after idle_timeout_minutes")
        return 0
    request_resources(bundles=[{"GPU": 1}] * args.gpus)
    deadline = time.monotonic() + args.timeout
    while True:
        have = ray.cluster_resources().get("GPU", 0)
        print(f"GPUs in the cluster: {have:g} / {args.gpus}", flush=True)
        if have >= args.gpus:
            return 0
        if time.monotonic() > deadline:
            print(
                f"error: only {have:g} GPUs after {args.timeout:g} s (quota, capacity in the "
                "zone, max_workers?); see `ray status` and the autoscaler log "
                "(`ray monitor cluster/gpu-cluster.yaml`)",
                file=sys.stderr,
            )
            return 1
        time.sleep(15)


if __name__ == "__main__":
    raise SystemExit(main())
