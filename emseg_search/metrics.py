"""Segmentation metrics as pure functions: confusion counts first, scores from counts.

Counts are int64 ``[tp, fp, fn, tn]`` (last axis). Scores are computed from counts, so the
data-set score is the score of the summed counts (exact under data parallelism: sum counts
across ranks, then score), and the per-image mean is the mean of per-image scores.

Empty-set conventions (a score is 1.0 only for a perfect answer, and 0.0 for any miss):
- IoU and Dice: prediction and target both empty -> 1.0.
- precision with no predicted pixel: 1.0 if the target is empty too, else 0.0.
- recall with an empty target: 1.0 if the prediction is empty too, else 0.0.
The particle-level scores of ``match_instances`` follow the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import linear_sum_assignment

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


# ---------------------------------------------------------------- particle (instance) level


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map instance ids to 1..K (0 stays background); return the map and K."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    idx = np.where(labels != 0, np.searchsorted(ids, labels) + 1, 0)
    return idx.astype(np.int64), len(ids)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer instance ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"`{name}` must hold ids >= 0 (0 = background), got {labels.min()}")
    return labels


def instance_iou(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """IoU matrix (n_true, n_pred) float64 between instances of two (H, W) label maps.

    Rows/columns follow the sorted non-zero ids of each map. One joint histogram of label
    pairs gives all intersections at once.
    """
    t = _check_labels(true_labels, "true_labels")
    p = _check_labels(pred_labels, "pred_labels")
    if t.shape != p.shape:
        raise ValueError(f"label maps differ in shape: {t.shape} vs {p.shape}")
    ti, nt = _consecutive(t)
    pi, npred = _consecutive(p)
    joint = np.bincount((ti * (npred + 1) + pi).ravel(), minlength=(nt + 1) * (npred + 1))
    joint = joint.reshape(nt + 1, npred + 1)
    inter = joint[1:, 1:].astype(np.float64)
    union = joint.sum(1)[1:, None] + joint.sum(0)[None, 1:] - inter
    return inter / np.maximum(union, 1.0)


def _instance_scores(n_true: int, n_pred: int, tp: int, sum_iou: float) -> dict[str, float]:
    fp, fn = n_pred - tp, n_true - tp
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / n_pred if n_pred else float(n_true == 0),
        "recall": tp / n_true if n_true else float(n_pred == 0),
        "f1": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
        "mean_matched_iou": sum_iou / tp if tp else 0.0,
        "sum_matched_iou": sum_iou,
        "panoptic_quality": sum_iou / (tp + fp / 2 + fn / 2) if (tp + fp + fn) else 1.0,
    }


def match_instances(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Match particles of two (H, W) instance maps (0 = background), StarDist-style.

    A pair matches when IoU >= ``iou_threshold``; the assignment maximises the number of
    matches, then their total IoU (unique anyway for thresholds >= 0.5). Returns n_true,
    n_pred, tp, fp, fn, precision, recall, f1, mean_matched_iou (0.0 without matches),
    sum_matched_iou and panoptic_quality (sum IoU / (tp + fp/2 + fn/2)).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    scores = instance_iou(true_labels, pred_labels)
    n_true, n_pred = scores.shape
    tp, sum_iou = 0, 0.0
    if n_true and n_pred:
        # Matched-count term dominates: the IoU term sums to < 0.5 over any assignment.
        costs = -(scores >= iou_threshold).astype(np.float64) - scores / (2 * min(n_true, n_pred))
        rows, cols = linear_sum_assignment(costs)
        matched = scores[rows, cols]
        matched = matched[matched >= iou_threshold]
        tp, sum_iou = int(matched.size), float(matched.sum())
    return _instance_scores(n_true, n_pred, tp, sum_iou)


def instance_totals(matches: Iterable[Mapping[str, float]]) -> torch.Tensor:
    """Sum per-image ``match_instances`` results -> (4,) float64 [n_true, n_pred, tp, sum IoU].

    Fixed size, so ``all_reduce_counts`` makes it exact over ranks (integers stay exact in
    float64 below 2**53).
    """
    totals = [0.0, 0.0, 0.0, 0.0]
    for m in matches:
        totals[0] += int(m["n_true"])
        totals[1] += int(m["n_pred"])
        totals[2] += int(m["tp"])
        totals[3] += float(m["sum_matched_iou"])
    return torch.tensor(totals, dtype=torch.float64)


def summarize_instance_totals(totals: torch.Tensor) -> dict[str, float]:
    """Data-set particle scores from ``instance_totals`` (4,) (summed over images and ranks)."""
    n_true, n_pred, tp = (int(round(float(v))) for v in totals[:3])
    return _instance_scores(n_true, n_pred, tp, float(totals[3]))


def summarize_instances(matches: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Data-set particle scores from per-image ``match_instances`` results (counts summed)."""
    return summarize_instance_totals(instance_totals(matches))
