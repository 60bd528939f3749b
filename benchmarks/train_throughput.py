"""Training throughput: plain PyTorch loop vs the Ray Train path (1 and 2 workers), plus the
data loader alone, on the same model, data and thread count.

    python benchmarks/train_throughput.py [--arch unet] [--encoder resnet18] [--tile 128]
        [--epochs 3] [--gpu]

images/s are training images (tiles) per second of the epoch loop, median over epochs after
the first (warm-up). Writes benchmarks/results/train_throughput[_gpu].md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _report import write_report  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from emseg_search.config import TrialConfig  # noqa: E402
from emseg_search.losses import build_trial_loss  # noqa: E402
from emseg_search.models.precision import autocast_dtype
from emseg_search.models.registry import build_model  # noqa: E402
from emseg_search.train.data import build_datasets, prepare_data  # noqa: E402
from emseg_search.train.loops import build_optimizer, build_scheduler, train_one_epoch


def plain(cfg: TrialConfig, threads: int, device: torch.device) -> tuple[float, float]:
    """(model images/s, loader-only images/s) of the plain loop in this process."""
    torch.set_num_threads(threads)
    prepared, data, _ = prepare_data(cfg)
    train, _ = build_datasets(cfg, prepared, data)
    loader = DataLoader(
        train,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    t = time.perf_counter()
    n = sum(b["image"].shape[0] for b in loader)
    loader_rate = n / (time.perf_counter() - t)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, len(loader))
    amp = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    rates = []
    for _ in range(cfg.epochs):
        s = train_one_epoch(
            model, loader, build_trial_loss(cfg), opt, sched, device, amp, scaler, cfg.grad_clip
        )
        rates.append(s.images / s.seconds)
    return statistics.median(rates[1:]), loader_rate


def ray_path(cfg: TrialConfig, workers: int, use_gpu: bool) -> tuple[float, float]:
    """(images/s inside the Train workers, wall seconds incl. start-up) of run_training."""
    from emseg_search.train.driver import run_training

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_training(cfg, Path(tmp) / "run", workers=workers, use_gpu=use_gpu)
        wall = time.perf_counter() - t
        epochs = pd.read_parquet(Path(tmp) / "run" / "epochs.parquet")
    return float(epochs["train_images_per_s"].iloc[1:].median()), wall


def main() -> None:
    """Measure and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--gpu", action="store_true")
    args = p.parse_args()
    import ray

    from emseg_search.train.cluster import init_ray

    cores = os.cpu_count() or 1
    cfg = TrialConfig(
        arch=args.arch,
        encoder=args.encoder,
        tile_size=args.tile,
        batch_size=8,
        tiles_per_image=2,
        epochs=args.epochs,
        warmup_epochs=0,
        val_every=args.epochs,
        augment="light",
    )
    device = torch.device("cuda" if args.gpu else "cpu")
    threads = cores if not args.gpu else 4
    rows = []
    base, loader_rate = plain(cfg, threads, device)
    rows.append(("plain PyTorch loop", f"1 process x {threads} threads", base, None))
    init_ray()
    configs = [(1, f"1 worker x {threads} threads")]
    if not args.gpu or torch.cuda.device_count() >= 2:
        configs.append((2, f"2 workers x {max(1, threads // 2)} threads"))
    for workers, label in configs:
        rate, wall = ray_path(cfg, workers, args.gpu)
        rows.append((f"Ray Train, {workers} worker(s)", label, rate, wall))
    ray.shutdown()
    head = (
        f"{args.arch}({args.encoder}), tile {args.tile}, batch 8, 1 channel, AdamW, dice+bce, "
        f"'light' augmentation; synthetic data; {platform.machine()}, {cores} cores, "
        f"torch {torch.__version__}, device {device}"
        + (
            f" ({torch.cuda.get_device_name()}, AMP {autocast_dtype(device, True)})"
            if args.gpu
            else ""
        )
    )
    table = [
        (name, how, f"{rate:.1f}", f"{rate / base:.2f}", "" if wall is None else f"{wall:.0f}")
        for name, how, rate, wall in rows
    ]
    table.append(
        ("data loader alone", "1 process", f"{loader_rate:.0f}", f"{loader_rate / base:.1f}", "")
    )
    columns = ["path", "processes", "images/s", "x plain", "wall s (incl. start-up)"]
    write_report(f"train_throughput{'_gpu' if args.gpu else ''}", head, columns, table)


if __name__ == "__main__":
    main()
