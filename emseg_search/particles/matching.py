"""Matching predicted particles to true ones: instance IoU, one-to-one matches at an IoU
threshold (StarDist-style precision / recall / F1, panoptic quality, count error), totals that
add up over images and ranks, and distances between size distributions.

Empty-set conventions as in ``metrics``: a score is 1.0 only for a perfect answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from emseg_search.particles.labelling import check_labels
from emseg_search.particles.measurement import check_pixel_size


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


def _instance_scores(
    n_true: int, n_pred: int, tp: int, sum_iou: float, miscount: int | None = None
) -> dict[str, float]:
    """Scores of particle counts; ``miscount`` is the summed per-image |n_pred - n_true|
    (one image: that difference itself)."""
    fp, fn = n_pred - tp, n_true - tp
    miscount = abs(n_pred - n_true) if miscount is None else miscount
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
        # miscounted particles per true particle (per-image |n_pred - n_true| summed): 0.0 is
        # perfect; no true particle -> the number predicted
        "count_error": miscount / n_true if n_true else float(miscount),
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
    """Sum per-image ``match_instances`` results -> (5,) float64 [n_true, n_pred, tp, sum IoU,
    sum |n_pred - n_true|].

    Fixed size, so ``all_reduce_counts`` makes it exact over ranks (integers stay exact in
    float64 below 2**53).
    """
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]
    for m in matches:
        totals[0] += int(m["n_true"])
        totals[1] += int(m["n_pred"])
        totals[2] += int(m["tp"])
        totals[3] += float(m["sum_matched_iou"])
        totals[4] += abs(int(m["n_pred"]) - int(m["n_true"]))
    return torch.tensor(totals, dtype=torch.float64)


def summarize_instance_totals(totals: torch.Tensor) -> dict[str, float]:
    """Data-set particle scores from ``instance_totals`` (5,) (summed over images and ranks);
    a (4,) tensor of older callers counts the miscount of the totals instead."""
    n_true, n_pred, tp = (int(round(float(v))) for v in totals[:3])
    miscount = int(round(float(totals[4]))) if len(totals) > 4 else None
    return _instance_scores(n_true, n_pred, tp, float(totals[3]), miscount)


def summarize_instances(matches: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Data-set particle scores from per-image ``match_instances`` results (counts summed)."""
    return summarize_instance_totals(instance_totals(matches))


def diameter_distance(true_diameters: np.ndarray, pred_diameters: np.ndarray) -> float:
    """1-Wasserstein distance between two samples of diameters (same unit as the input).

    An empty side counts as all its mass at diameter 0, so the distance is the other side's
    mean diameter (missing every particle costs their mean size); both empty -> 0.0.
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(true_diameters, np.float64).ravel()
    b = np.asarray(pred_diameters, np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("diameters must be finite (drop NaN rows, e.g. unknown pixel size)")
    if a.size == 0 or b.size == 0:
        return float(a.mean()) if a.size else float(b.mean()) if b.size else 0.0
    return float(wasserstein_distance(a, b))


def median_diameter_error(true_diameters: np.ndarray, pred_diameters: np.ndarray) -> float:
    """Relative error of the median equivalent diameter: (median pred - median true) / median
    true, signed (> 0: particles measured too large). What a user reporting a sample's median
    particle size gets wrong; NaN when either side has no particle (undefined, not 0 or 1)."""
    a = np.asarray(true_diameters, np.float64).ravel()
    b = np.asarray(pred_diameters, np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("diameters must be finite (drop NaN rows, e.g. unknown pixel size)")
    if a.size == 0 or b.size == 0:
        return float("nan")
    true_median = float(np.median(a))
    return (float(np.median(b)) - true_median) / true_median


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameters (px) of the particles of an (H, W) instance map, in id order."""
    from skimage.measure import regionprops_table

    props = regionprops_table(labels, properties=("equivalent_diameter_area",))
    return props["equivalent_diameter_area"]


def size_distribution_distance(
    true_labels: np.ndarray, pred_labels: np.ndarray, pixel_size: float | None = None
) -> float:
    """Wasserstein distance between equivalent-diameter distributions of two (H, W) label maps.

    In px, or nm when ``pixel_size`` (nm per px) is given; empty sides as `diameter_distance`.
    """
    scale = check_pixel_size(pixel_size) if pixel_size is not None else 1.0
    t = equivalent_diameters(check_labels(true_labels, "true_labels"))
    p = equivalent_diameters(check_labels(pred_labels, "pred_labels"))
    return diameter_distance(t, p) * scale
