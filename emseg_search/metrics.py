"""Segmentation metrics as pure functions: confusion counts first, scores from counts.

Counts are int64 ``[tp, fp, fn, tn]`` (last axis). Scores are computed from counts, so the
data-set score is the score of the summed counts (exact under data parallelism: sum counts
across ranks, then score), and the per-image mean is the mean of per-image scores.

Empty-set conventions (a score is 1.0 only for a perfect answer, and 0.0 for any miss):
- IoU and Dice: prediction and target both empty -> 1.0.
- precision with no predicted pixel: 1.0 if the target is empty too, else 0.0.
- recall with an empty target: 1.0 if the prediction is empty too, else 0.0.
The particle-level scores of ``particles.matching`` follow the same rules.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "fn", "tn")
PIXEL_METRICS: tuple[str, ...] = (
    "iou",
    "dice",
    "precision",
    "recall",
    "mean_image_iou",
    "mean_image_dice",
)


def _as_bool(x: torch.Tensor, name: str) -> torch.Tensor:
    """Bool view of a bool or 0/1 tensor; anything else is a caller bug (unthresholded)."""
    if x.dtype == torch.bool:
        return x
    if not ((x == 0) | (x == 1)).all():
        raise ValueError(
            f"`{name}` must be boolean or 0/1; threshold probabilities or logits "
            f"first (e.g. `logits > 0`)"
        )
    return x != 0


def per_image_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Counts per image: pred, target (N, 1, H, W) or (N, H, W) bool/0-1 -> (N, 4) int64.

    A single (H, W) image gives (1, 4).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.dim() < 2:
        raise ValueError(f"expected (H, W), (N, H, W) or (N, 1, H, W), got {tuple(pred.shape)}")
    p = _as_bool(pred, "pred")
    t = _as_bool(target, "target")
    if p.dim() == 2:
        p, t = p[None], t[None]
    p, t = p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Counts over all pixels: pred, target (N, 1, H, W) or (H, W) -> (4,) int64 [tp,fp,fn,tn]."""
    return per_image_counts(pred, target).sum(0)


def _split(counts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if counts.shape[-1:] != (4,):
        raise ValueError(
            f"counts must have a last axis of 4 [tp, fp, fn, tn], got {tuple(counts.shape)}"
        )
    return counts.to(torch.float64).unbind(-1)


def _ratio(num: torch.Tensor, den: torch.Tensor, fallback: torch.Tensor | float) -> torch.Tensor:
    """num / den where den > 0, else ``fallback`` (counts are integers: den > 0 means >= 1)."""
    fallback = torch.as_tensor(fallback, dtype=num.dtype, device=num.device)
    return torch.where(den > 0, num / den.clamp_min(1.0), fallback)


def iou(counts: torch.Tensor) -> torch.Tensor:
    """IoU tp / (tp + fp + fn) from counts (..., 4) -> (...) float64; both empty -> 1.0."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(tp, tp + fp + fn, 1.0)


def dice(counts: torch.Tensor) -> torch.Tensor:
    """Dice 2tp / (2tp + fp + fn) from counts (..., 4) -> (...) float64; both empty -> 1.0."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


def precision(counts: torch.Tensor) -> torch.Tensor:
    """tp / (tp + fp) from counts (..., 4) -> (...) float64; none predicted -> 1.0 iff fn == 0."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(tp, tp + fp, (fn == 0).to(tp.dtype))


def recall(counts: torch.Tensor) -> torch.Tensor:
    """tp / (tp + fn) from counts (..., 4) -> (...) float64; empty target -> 1.0 iff fp == 0."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(tp, tp + fn, (fp == 0).to(tp.dtype))


def image_sums(per_image: torch.Tensor) -> torch.Tensor:
    """Fixed-size summary of per-image counts (N, 4) -> (3,) float64 [sum IoU, sum Dice, N]."""
    if per_image.dim() != 2:
        raise ValueError(f"per-image counts must be (N, 4), got {tuple(per_image.shape)}")
    n = torch.tensor(float(per_image.shape[0]), dtype=torch.float64, device=per_image.device)
    return torch.stack([iou(per_image).sum(), dice(per_image).sum(), n])


def summarize_sums(counts_total: torch.Tensor, sums: torch.Tensor) -> dict[str, float]:
    """Metrics from summed counts (4,) and ``image_sums`` (3,); no images -> NaN means."""
    n = float(sums[2])
    return {
        "iou": float(iou(counts_total)),
        "dice": float(dice(counts_total)),
        "precision": float(precision(counts_total)),
        "recall": float(recall(counts_total)),
        "mean_image_iou": float(sums[0]) / n if n else float("nan"),
        "mean_image_dice": float(sums[1]) / n if n else float("nan"),
    }


def summarize(counts_total: torch.Tensor, per_image: torch.Tensor) -> dict[str, float]:
    """Data-set scores from summed counts (4,) plus mean per-image IoU/Dice from (N, 4)."""
    return summarize_sums(counts_total, image_sums(per_image))


def all_reduce_counts(counts: torch.Tensor) -> torch.Tensor:
    """Sum counts (4,) or ``image_sums`` (3,) over all ranks; a plain copy if not distributed.

    Each sample must be evaluated on exactly one rank: DistributedSampler pads shards with
    repeated samples, which would count them twice.
    """
    out = counts.detach().clone()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return out
    work = out
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        work = out.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(counts.device)


def summarize_distributed(counts_total: torch.Tensor, per_image: torch.Tensor) -> dict[str, float]:
    """``summarize`` of the whole validation set from this rank's counts (4,) and (N, 4)."""
    return summarize_sums(all_reduce_counts(counts_total), all_reduce_counts(image_sums(per_image)))
