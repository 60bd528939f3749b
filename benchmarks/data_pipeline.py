"""Benchmark the data layer: synthetic generation, decoding EMPS, and training-tile throughput.

    python benchmarks/data_pipeline.py [--emps DIR] [--n 100]

Prints a table and writes it to benchmarks/results/data_pipeline.md. Pinned to one thread
(OMP/torch) so numbers compare across machines; run it with `taskset -c 0` for one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import torch  # noqa: E402
from _report import write_report  # noqa: E402

from emseg_search.data import clear_cache, compute_fingerprint, load_data  # noqa: E402
from emseg_search.data.datasets import TileDataset  # noqa: E402
from emseg_search.data.synth.generator import generate_sample, write_synthetic_dataset  # noqa: E402


def _light_augment() -> A.Compose:
    """Flips, rotate90, mild affine and contrast: a typical training augmentation."""
    return A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.Affine(scale=(0.8, 1.2), rotate=(-20, 20), p=0.5),
            A.RandomBrightnessContrast(p=0.5),
        ]
    )


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.1f}"


def bench_generation(n: int) -> list[tuple[str, str, str]]:
    """images/s of generate_sample and of write_synthetic_dataset at 256x256."""
    t = time.perf_counter()
    for i in range(n):
        generate_sample([0, i], 256)
    gen = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_synthetic_dataset(Path(tmp) / "s", n=n, seed=0, size=256)
        write = time.perf_counter() - t
    return [
        ("synthetic generate_sample 256x256", "images/s", _rate(n, gen)),
        ("synthetic write_synthetic_dataset 256x256 (PNG)", "images/s", _rate(n, write)),
    ]


def bench_tiles(
    root: Path, tile: int, scale: float, label: str, n: int
) -> list[tuple[str, str, str]]:
    """Decode + validate time, then tiles/s of TileDataset with the light augmentation."""
    clear_cache()
    t = time.perf_counter()
    data = load_data(root)
    decode = time.perf_counter() - t
    fp = compute_fingerprint(data.items)
    ds = TileDataset(
        data.items,
        tile_size=tile,
        mean=fp.intensity_mean,
        std=fp.intensity_std,
        samples_per_epoch=n,
        scale=scale,
        transform=_light_augment(),
    )
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    tiles = time.perf_counter() - t
    return [
        (f"{label}: decode+validate {len(data.items)} images", "s", f"{decode:.2f}"),
        (
            f"{label}: training tiles {tile}px scale {scale} (flips+affine+contrast)",
            "tiles/s",
            _rate(n, tiles),
        ),
    ]


def main() -> None:
    """Run the benchmarks and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emps", type=Path, default=os.environ.get("EMSEG_EMPS_DIR"))
    p.add_argument("--n", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = bench_generation(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        synth = write_synthetic_dataset(Path(tmp) / "s", n=args.n, seed=1, size=256)
        rows += bench_tiles(synth, 128, 1.0, "synthetic", args.n * 4)
    if args.emps and Path(args.emps).is_dir():
        rows += bench_tiles(Path(args.emps), 256, 0.5, "EMPS", args.n * 4)
    head = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, 1 thread, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )
    write_report("data_pipeline", head, ["measurement", "unit", "value"], rows)


if __name__ == "__main__":
    main()
