"""Search overhead: search wall time vs the sum of its trials' own training time, and the fixed
cost of a trial before and after its epochs.

    python benchmarks/search_overhead.py [--trials 3] [--tiles-per-image 6] [--epochs 2]
                                         [--runner auto] [--runner train]

Runs a search of identical UNet(resnet18) trials on the synthetic set with no early stopping,
one trial at a time (1 worker x all CPUs), once per runner (``resources.runner``: ``auto``
trains a 1-worker trial inside its Tune process, ``train`` in a TorchTrainer), and reads the
per-epoch timings the trials report. Defaults give ~1-minute trials on 2 cores.
Writes benchmarks/results/search_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(runner: str, args: argparse.Namespace) -> dict[str, float]:
    """One search of identical trials with ``runner``; its timings."""
    import ray

    from emseg_search.results.io import load_experiment
    from emseg_search.search.driver import run_search
    from emseg_search.space.spec import space_from_dict

    space = space_from_dict(
        {
            "name": "overhead",
            "data": "synthetic",
            "budget": {"num_samples": args.trials, "max_concurrent_trials": 1},
            "resources": {"workers": 1, "cpus_per_worker": os.cpu_count() or 1, "runner": runner},
            "scheduler": {"type": "none", "max_epochs": args.epochs},
            "searcher": {"type": "random", "seed": 0},
            "fixed": {
                "arch": "unet",
                "encoder": "resnet18",
                "tile_size": 128,
                "batch_size": 8,
                "tiles_per_image": args.tiles_per_image,
                "augment": "light",
                "warmup_epochs": 0,
            },
            "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        },
        source="benchmark",
    )
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "overhead"
        t0 = time.perf_counter()
        run_search(space, exp)
        wall = time.perf_counter() - t0
        tables = load_experiment(exp)
    ray.shutdown()
    n = len(tables["trials"])
    train = float(tables["trials"]["train_seconds"].sum())
    val = float(tables["epochs"]["val_seconds"].sum())
    return {"n": n, "wall": wall, "train": train, "val": val}


def main() -> None:
    """Run the searches, measure, write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--tiles-per-image", type=int, default=6)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--runner",
        action="append",
        choices=["auto", "train"],
        help="resources.runner to measure (repeat; default: both)",
    )
    p.add_argument(
        "--report",
        default="search_overhead",
        help="name of the table under benchmarks/results/ (default search_overhead)",
    )
    args = p.parse_args()
    from _report import write_report

    runners = args.runner or ["auto", "train"]
    got = {r: measure(r, args) for r in runners}
    names = {"auto": "inline (runner: auto, 1 worker)", "train": "TorchTrainer (runner: train)"}

    def row(label: str, fn) -> list[str]:
        return [label, *(fn(got[r]) for r in runners)]

    rows = [
        row("trials", lambda m: f"{m['n']} x {args.epochs} epochs"),
        row("search wall time (incl. Ray start, data check)", lambda m: f"{m['wall']:.1f} s"),
        row("training time per trial (epoch loops)", lambda m: f"{m['train'] / m['n']:.1f} s"),
        row("validation time per trial", lambda m: f"{m['val'] / m['n']:.1f} s"),
        row("wall time per trial", lambda m: f"{m['wall'] / m['n']:.1f} s"),
        row(
            "fixed cost per trial (wall - training - validation)",
            lambda m: f"{(m['wall'] - m['train'] - m['val']) / m['n']:.1f} s",
        ),
        row(
            "overhead (1 - (training + validation) / wall)",
            lambda m: f"{100 * (1 - (m['train'] + m['val']) / m['wall']):.1f} %",
        ),
        row(
            "overhead (1 - training / wall)",
            lambda m: f"{100 * (1 - m['train'] / m['wall']):.1f} %",
        ),
    ]
    head = (
        f"UNet(resnet18), 128 px tiles, batch 8, {args.tiles_per_image} tiles/image "
        f"(~{int(128 * args.tiles_per_image)} tiles/epoch), 1 worker x {os.cpu_count()} threads; "
        f"{platform.machine()}, {os.cpu_count()} cores; one Ray start per search (~4 s) is in "
        "the wall time"
    )
    write_report(args.report, head, ["measurement", *(names[r] for r in runners)], rows)


if __name__ == "__main__":
    main()
