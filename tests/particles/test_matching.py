"""Particle matching: instance IoU, optimal one-to-one matches, empty conventions, totals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emseg_search.particles.matching import (
    instance_iou,
    instance_totals,
    match_instances,
    summarize_instances,
)

# ----------------------------------------------------------------------- particle matching


def _labels(w: int, spans: dict[int, tuple[int, int]]) -> np.ndarray:
    """One-row (1, w) label map with id -> [start, stop) pixel spans."""
    lab = np.zeros((1, w), np.int32)
    for i, (a, b) in spans.items():
        lab[0, a:b] = i
    return lab


def test_instance_iou_matrix_known_answer() -> None:
    true = np.zeros((6, 6), np.uint16)
    true[0:4, 0:4] = 7  # 16 px
    pred = np.zeros((6, 6), np.int64)
    pred[0:4, 1:5] = 3  # shifted one column: inter 12, union 20
    pred[5, 5] = 9  # stray pixel
    assert instance_iou(true, pred) == pytest.approx(np.array([[0.6, 0.0]]))


def test_match_known_answer() -> None:
    true = np.zeros((10, 10), np.uint16)
    true[0:3, 0:3] = 1000  # 9 px, found exactly
    true[5:9, 5:9] = 65535  # 16 px, pred overlaps poorly
    pred = np.zeros((10, 10), np.int32)
    pred[0:3, 0:3] = 5
    pred[7:10, 7:10] = 7  # inter 4 with the big one, union 21: IoU 0.19
    pred[0, 8:10] = 9  # spurious
    m = match_instances(true, pred)
    assert (m["n_true"], m["n_pred"], m["tp"], m["fp"], m["fn"]) == (2, 3, 1, 2, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 / (2 + 2 + 1))
    assert m["mean_matched_iou"] == pytest.approx(1.0)
    assert m["panoptic_quality"] == pytest.approx(1.0 / (1 + 1 + 0.5))
    low = match_instances(true, pred, iou_threshold=0.15)
    assert low["tp"] == 2 and low["mean_matched_iou"] == pytest.approx((1 + 4 / 21) / 2)


def test_match_threshold_is_inclusive_and_unique() -> None:
    true = _labels(8, {1: (0, 4), 2: (4, 8)})
    pred = _labels(8, {1: (0, 8)})  # one merged particle: IoU exactly 0.5 with each
    at = match_instances(true, pred, iou_threshold=0.5)
    assert (at["tp"], at["fp"], at["fn"]) == (1, 0, 1)
    above = match_instances(true, pred, iou_threshold=0.51)
    assert (above["tp"], above["fp"], above["fn"]) == (0, 1, 2)


def test_match_is_optimal_not_greedy() -> None:
    true = _labels(20, {1: (0, 10), 2: (10, 20)})
    pred = _labels(20, {1: (4, 14), 2: (0, 4)})  # IoUs: X-A 6/14, X-B 4/16, Y-A 4/10
    # greedy (best IoU first) takes X-A and strands Y; the optimum matches both
    m = match_instances(true, pred, iou_threshold=0.2)
    assert m["tp"] == 2
    assert m["sum_matched_iou"] == pytest.approx(4 / 16 + 4 / 10)


def test_match_empty_conventions() -> None:
    empty = np.zeros((4, 4), np.uint8)
    one = empty.copy()
    one[1:3, 1:3] = 1
    both = match_instances(empty, empty)
    assert (both["tp"], both["precision"], both["recall"], both["f1"]) == (0, 1.0, 1.0, 1.0)
    missed = match_instances(one, empty)
    assert (missed["fn"], missed["precision"], missed["recall"], missed["f1"]) == (1, 0.0, 0.0, 0.0)
    alarm = match_instances(empty, one)
    assert (alarm["fp"], alarm["precision"], alarm["recall"], alarm["f1"]) == (1, 0.0, 0.0, 0.0)


def test_match_accepts_bool_and_tensors_and_checks_input() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    assert match_instances(mask, torch.from_numpy(mask.astype(np.int64)))["tp"] == 1
    with pytest.raises(ValueError, match="shape"):
        match_instances(mask, mask[:3])
    with pytest.raises(ValueError, match="integer"):
        match_instances(mask.astype(np.float32), mask)
    with pytest.raises(ValueError, match=">= 0"):
        match_instances(-mask.astype(np.int32), mask)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(mask, mask, iou_threshold=0.0)


def test_summarize_instances_sums_counts() -> None:
    a = {"n_true": 2, "n_pred": 3, "tp": 1, "sum_matched_iou": 0.9}
    b = {"n_true": 4, "n_pred": 3, "tp": 3, "sum_matched_iou": 2.4}
    s = summarize_instances([a, b])
    assert instance_totals([a, b]).tolist() == pytest.approx([6, 6, 4, 3.3, 2])
    assert s["count_error"] == pytest.approx(2 / 6)  # |3 - 2| + |3 - 4| over 6 true
    assert (s["tp"], s["fp"], s["fn"]) == (4, 2, 2)
    assert s["f1"] == pytest.approx(8 / 12)
    assert s["mean_matched_iou"] == pytest.approx(3.3 / 4)
    assert summarize_instances([])["f1"] == 1.0
