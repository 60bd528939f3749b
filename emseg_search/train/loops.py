"""Plain-torch training and evaluation: optimiser, schedule, one epoch, full-image validation."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from emseg_search.config import TrialConfig
from emseg_search.metrics import all_reduce_counts, per_image_counts, summarize_distributed
from emseg_search.particles.matching import (
    instance_totals,
    match_instances,
    summarize_instance_totals,
)
from emseg_search.particles.postprocess import PostProcess

# what validation reports of the particles (particles.matching's names; "val_" in epochs)
PARTICLE_METRICS: dict[str, str] = {
    "precision": "particle_precision",
    "recall": "particle_recall",
    "f1": "particle_f1",
    "panoptic_quality": "panoptic_quality",
    "count_error": "count_error",
}


class DivergedError(RuntimeError):
    """Training produced a NaN/inf loss; the run stops instead of training on garbage.

    ``step`` is the step of the epoch and ``ranks`` the data-parallel ranks whose loss was
    not finite (every rank raises the same error, see ``agree_finite``).
    """

    def __init__(self, message: str, step: int | None = None, ranks: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.step, self.ranks = step, ranks


def _distributed() -> bool:
    """True inside an initialised torch.distributed group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree_finite(loss: torch.Tensor, step: int, lr: float) -> None:
    """Raise DivergedError on EVERY rank when the loss (a scalar) is NaN/inf on ANY rank.

    Under torch.distributed each rank's loss is all-reduced first (one value per rank), so a
    rank whose loss diverged never stops alone while the others wait for it in DDP's gradient
    all-reduce; call it before backward, on every rank, every step.
    """
    if _distributed():
        world, rank = dist.get_world_size(), dist.get_rank()
        on = loss.device if dist.get_backend() == "nccl" else torch.device("cpu")
        losses = torch.zeros(world, dtype=torch.float64, device=on)
        losses[rank] = float(loss.detach())  # the other slots stay 0: a sum keeps NaN/inf
        dist.all_reduce(losses, op=dist.ReduceOp.SUM)
        values = losses.tolist()
    else:
        world, values = 1, [float(loss.detach())]
    bad = tuple(r for r, v in enumerate(values) if not math.isfinite(v))
    if not bad:
        return
    where = ""
    if world > 1:
        where = f" on rank{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {world}"
    raise DivergedError(
        f"loss became {values[bad[0]]} at step {step} of the epoch{where} (lr {lr:.3g}); "
        "lower the learning rate or enable gradient clipping",
        step=step,
        ranks=bad,
    )


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch did."""

    train_loss: float
    images: int
    seconds: float
    lr: float


def build_optimizer(model: nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float = 0.01) -> float:
    """Linear warm-up to 1, then cosine decay to ``floor`` (TrialConfig.lr_min_factor): a pure
    function of the step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrialConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule over ``cfg.epochs`` down to ``cfg.lr_min_factor``."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(lr_factor, total_steps=total, warmup_steps=warmup, floor=cfg.lr_min_factor),
    )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> EpochStats:
    """One pass over ``loader`` ({"image": (N,1,T,T), "mask": (N,C,T,T)}); mean loss per image.

    Raises DivergedError on a NaN/inf loss, naming the step; under torch.distributed every
    rank raises it when any rank's loss is not finite (``agree_finite``).
    """
    model.train()
    t0 = time.perf_counter()
    total, seen = 0.0, 0
    for step, batch in enumerate(loader):
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(image)
            loss = loss_fn(logits.float(), mask)
        agree_finite(loss, step, optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * image.shape[0]
        seen += image.shape[0]
    return EpochStats(
        train_loss=total / max(seen, 1),
        images=seen,
        seconds=time.perf_counter() - t0,
        lr=optimizer.param_groups[0]["lr"],
    )


def full_resolution_logits(
    model: nn.Module,
    image: torch.Tensor,
    size: tuple[int, int],
    out_size: tuple[int, int],
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits (1, C, H, W) at the original size for a padded image (1, 1, Hp, Wp).

    Crops the padding (``size`` is the unpadded size at the model's scale) and, when the
    model ran at another scale, resizes bilinearly to ``out_size``.
    """
    with torch.autocast(image.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(image)
    logits = logits[..., : size[0], : size[1]].float()
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits


def ms_per_megapixel(timed: list[tuple[float, int]]) -> float:
    """Forward-pass milliseconds per megapixel from this rank's (seconds, pixels) per image,
    pooled over ranks (each ran its own shard at the same time); NaN when nothing was timed."""
    sums = torch.tensor([sum(t for t, _ in timed), sum(n for _, n in timed)], dtype=torch.float64)
    seconds, pixels = all_reduce_counts(sums).tolist()
    return 1000.0 * seconds / (pixels / 1e6) if pixels else math.nan


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, object]],
    device: torch.device,
    threshold: float = 0.5,
    amp_dtype: torch.dtype | None = None,
    post: PostProcess | None = None,
    particles: bool = False,
) -> dict[str, float]:
    """Score whole images (batch size 1, see WholeImageDataset) at their original resolution.

    Returns data-set level ``iou``/``dice``/``precision``/``recall`` of the particle mask
    (from summed confusion counts) and ``mean_image_iou``/``mean_image_dice``. ``post`` turns
    the model's outputs into a mask and particles (default: the binary target at
    ``threshold``); with ``particles`` its instances are matched to the true ones at IoU >=
    0.5 and ``particle_precision``/``_recall``/``_f1``, ``panoptic_quality`` and
    ``count_error`` come too (particles.matching, totals summed over images).
    ``ms_per_megapixel`` times the model's forward pass (device-dependent). Under
    torch.distributed each rank passes its own disjoint shard and the counts are summed over
    ranks, so every rank gets the scores of the whole validation set.
    """
    model.eval()
    post = post or PostProcess(threshold=threshold)
    per_image, matches, timed = [], [], []
    for batch in loader:
        image = batch["image"].to(device)
        target = batch["mask"][0, 0].to(device) > 0.5
        size = tuple(int(v) for v in batch["size"][0])
        t0 = time.perf_counter()
        logits = full_resolution_logits(model, image, size, tuple(target.shape), amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timed.append((time.perf_counter() - t0, target.numel()))
        per_image.append(per_image_counts(post.mask(logits[0])[0], target))
        if particles:
            true = batch["instances"][0].numpy()
            matches.append(match_instances(true, post.instances(logits[0].cpu())))
    counts = torch.cat(per_image) if per_image else torch.zeros((0, 4), dtype=torch.int64)
    counts = counts.cpu()
    scores = summarize_distributed(counts.sum(0), counts)
    scores["ms_per_megapixel"] = ms_per_megapixel(timed[1:] or timed)  # 1st: one-off set-up
    if particles:
        found = summarize_instance_totals(all_reduce_counts(instance_totals(matches)))
        scores.update({name: found[key] for key, name in PARTICLE_METRICS.items()})
    return scores
