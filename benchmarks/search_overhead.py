"""Search overhead: search wall time vs the sum of its trials' own training time, and the fixed
cost of a trial before and after its epochs.

    python benchmarks/search_overhead.py [--trials 3] [--tiles-per-image 12] [--epochs 2]

Runs a search of identical UNet(resnet18) trials on the synthetic set with no early stopping,
one trial at a time (1 worker x all CPUs), and reads the per-epoch timings the workers report.
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


def main() -> None:
    """Run the search, measure, write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--tiles-per-image", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()

    import pandas as pd
    import ray
    from _report import write_report

    from emseg_search.search import run_search
    from emseg_search.space import space_from_dict

    cores = os.cpu_count() or 1
    space = space_from_dict(
        {
            "name": "overhead",
            "data": "synthetic",
            "budget": {"num_samples": args.trials, "max_concurrent_trials": 1},
            "resources": {"workers": 1, "cpus_per_worker": cores},
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
        trials = pd.read_parquet(exp / "trials.parquet")
        epochs = pd.read_parquet(exp / "epochs.parquet")
    ray.shutdown()
    train = float(trials["train_seconds"].sum())
    val = float(epochs["val_seconds"].sum())
    per_trial = wall / len(trials)
    train_per_trial = train / len(trials)
    rows = [
        (
            "trials",
            f"{len(trials)} x {args.epochs} epochs, "
            f"{int(epochs.groupby('trial_id').size().iloc[0])} reported each",
        ),
        ("search wall time (incl. Ray start, data check)", f"{wall:.1f} s"),
        ("sum of trials' training time (epoch loops)", f"{train:.1f} s"),
        ("training time per trial", f"{train_per_trial:.1f} s"),
        ("wall time per trial", f"{per_trial:.1f} s"),
        ("validation time per trial", f"{val / len(trials):.1f} s"),
        ("fixed cost per trial (wall - training)", f"{per_trial - train_per_trial:.1f} s"),
        (
            "fixed cost per trial (wall - training - validation)",
            f"{per_trial - (train + val) / len(trials):.1f} s",
        ),
        ("overhead (1 - training / wall)", f"{100 * (1 - train / wall):.1f} %"),
        (
            "overhead (1 - (training + validation) / wall)",
            f"{100 * (1 - (train + val) / wall):.1f} %",
        ),
    ]
    head = (
        f"UNet(resnet18), 128 px tiles, batch 8, {args.tiles_per_image} tiles/image "
        f"(~{int(128 * args.tiles_per_image)} tiles/epoch); {platform.machine()}, {cores} "
        "cores; one Ray start per search (~4 s) is in the wall time"
    )
    write_report("search_overhead", head, ["measurement", "value"], rows)


if __name__ == "__main__":
    main()
