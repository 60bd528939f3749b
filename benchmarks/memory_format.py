"""Training step time in contiguous (NCHW) against channels-last (NHWC) memory, side by side
in one process, for the shipped configs' models (what ``channels_last``, on by default,
changes).

    python benchmarks/memory_format.py [--configs configs/emps_unet_robust.yaml ...]
        [--steps 10] [--rounds 3] [--gpu]

One step = forward, the config's loss, backward, AdamW, on one random batch of the config's
batch size and tile size (the data pipeline is ~1 % of a step for these models: docs/usage.md).
The two layouts alternate round by round from the same initial weights; the table gives each
one's median seconds per step over the rounds and the ratio. Writes
benchmarks/results/memory_format[_gpu].md.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _report import write_report  # noqa: E402

from emseg_search.config import TrialConfig  # noqa: E402
from emseg_search.losses import build_trial_loss  # noqa: E402
from emseg_search.models.precision import autocast_dtype  # noqa: E402
from emseg_search.models.registry import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (
    "configs/emps_unet_robust.yaml",
    "configs/emps_deeplabv3plus.yaml",
    "configs/synthetic_unet.yaml",
)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def batch(cfg: TrialConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image batch and a target of the config's kind (boundary: 3 classes)."""
    g = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, 1, cfg.tile_size, cfg.tile_size)
    classes = 3 if cfg.target == "boundary" else 2
    return (
        torch.randn(shape, generator=g).to(device),
        torch.randint(0, classes, shape, generator=g).float().to(device),
    )


def seconds_per_step(
    model: torch.nn.Module, cfg: TrialConfig, device: torch.device, steps: int
) -> float:
    """Mean seconds of ``steps`` training steps after one warm-up step."""
    loss_fn = build_trial_loss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = batch(cfg, device)
    amp = autocast_dtype(device, cfg.amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    """Measure and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gpu", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    rows = []
    for path in args.configs:
        # no pretrained weights: they change no step time and need no download or extra
        cfg = TrialConfig.from_yaml(ROOT / path, encoder_weights=None)
        torch.manual_seed(0)
        base = build_model(cfg).to(device)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for layout in (False, True):
                model = copy.deepcopy(base)
                if layout:
                    model = model.to(memory_format=torch.channels_last)
                times[layout].append(seconds_per_step(model, cfg, device, args.steps))
        nchw, nhwc = (statistics.median(times[k]) for k in (False, True))
        rows.append(
            (
                Path(path).name,
                f"{cfg.arch}({cfg.encoder}), tile {cfg.tile_size}, batch {cfg.batch_size}, "
                f"{cfg.loss}",
                f"{nchw:.3f}",
                f"{nhwc:.3f}",
                f"{nchw / nhwc:.2f}",
                f"{cfg.batch_size / nhwc:.1f}",
            )
        )
        print(rows[-1], flush=True)
    head = (
        f"Training step, contiguous (NCHW) vs channels-last (NHWC): median over {args.rounds} "
        f"alternating rounds of {args.steps} steps; {platform.machine()} {cpu_name()}, "
        f"{cores} cores, {cores} threads, torch "
        f"{torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()}, AMP)" if args.gpu else "")
    )
    columns = ["config", "model", "s/step NCHW", "s/step NHWC", "speed-up", "images/s NHWC"]
    write_report(f"memory_format{'_gpu' if args.gpu else ''}", head, columns, rows)


if __name__ == "__main__":
    main()
