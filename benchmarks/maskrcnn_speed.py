"""Mask R-CNN against UNet (both MobileNetV2 with ImageNet weights), side by side in one process:
training steps on 128 x 128 tiles of the synthetic set and whole-image inference, wall and CPU
time.

    python benchmarks/maskrcnn_speed.py [--threads 2] [--steps 3]

On a shared machine only the ratios mean something (docs/usage.md, "Mask R-CNN"). Writes
benchmarks/results/maskrcnn_speed.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import write_report  # noqa: E402

from emseg_search.config import TrialConfig  # noqa: E402
from emseg_search.data import load_data  # noqa: E402
from emseg_search.data.synth.default_set import ensure_synthetic_data  # noqa: E402
from emseg_search.losses import build_trial_loss  # noqa: E402
from emseg_search.models.registry import build_model  # noqa: E402
from emseg_search.train.loops import forward_loss  # noqa: E402


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def train_step(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
) -> None:
    """One optimiser step, as train_one_epoch takes it."""
    loss = forward_loss(model, loss_fn, images, target)
    opt.zero_grad()
    loss.backward()
    opt.step()


def measure(
    arch: str, images: torch.Tensor, instances: torch.Tensor, grey: np.ndarray, steps: int
) -> list[list[str]]:
    """Rows (model, what, wall s, CPU s): median training step, then eval at 256 and 512 px."""
    torch.manual_seed(0)
    cfg = TrialConfig(arch=arch, encoder="mobilenet_v2", encoder_weights="imagenet-offline")
    model, loss_fn = build_model(cfg).train(), build_trial_loss(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    target = instances if arch == "maskrcnn" else (instances > 0).float()
    step = partial(train_step, model, loss_fn, opt, images, target)
    step()  # warm-up
    times = [timed(step) for _ in range(steps)]
    wall, cpu = (float(np.median([t[i] for t in times])) for i in (0, 1))
    rows = [[arch, "train 8 x 128 x 128", f"{wall:.2f}", f"{cpu:.2f}"]]
    model.eval()
    for size in (256, 512):
        reps = size // 256
        x = torch.from_numpy(np.tile(grey, (reps, reps)))[None, None]
        with torch.inference_mode():
            model(x)  # warm-up
            wall, cpu = timed(partial(model, x))
        rows.append([arch, f"eval {size} x {size}", f"{wall:.2f}", f"{cpu:.2f}"])
    return rows


def main() -> None:
    """Measure and report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_data(ensure_synthetic_data(f"{tmp}/synth", n=8, size=256, seed=2))
        items = data.subset(data.names)
    tiles = [(m.image[:128, :128], m.instances[:128, :128]) for m in items[:8]]
    images = torch.stack([torch.from_numpy(t[0].astype(np.float32) / 255)[None] for t in tiles])
    instances = torch.stack([torch.from_numpy(t[1].astype(np.float32))[None] for t in tiles])
    grey = items[0].image.astype(np.float32) / 255
    rows = [
        r
        for arch in ("unet", "maskrcnn")
        for r in measure(arch, images, instances, grey, args.steps)
    ]
    head = (
        f"# Mask R-CNN vs UNet (mobilenet_v2, ImageNet), {args.threads} threads, "
        f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    write_report("maskrcnn_speed", head, ["model", "what", "wall s", "CPU s"], rows)


if __name__ == "__main__":
    main()
