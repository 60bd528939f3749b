"""Known-answer tests for pixel and particle metrics, and the exact data-parallel reduction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import ndimage

from emseg_search.metrics import (
    PIXEL_METRICS,
    all_reduce_counts,
    confusion_counts,
    dice,
    image_sums,
    iou,
    per_image_counts,
    precision,
    recall,
    summarize,
    summarize_distributed,
)
from emseg_search.particles.matching import (
    instance_totals,
    match_instances,
    summarize_instance_totals,
    summarize_instances,
)


def _t(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------------------ pixel counts


def test_counts_known_answer() -> None:
    pred = _t([[1, 1, 0, 0], [1, 0, 0, 0]])
    target = _t([[1, 0, 1, 0], [1, 1, 0, 0]])
    counts = confusion_counts(pred, target)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [2, 1, 2, 3]  # tp, fp, fn, tn


def test_counts_accept_0_1_numbers_and_nchw() -> None:
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    target = torch.tensor([[1, 0], [1, 0]], dtype=torch.uint8).reshape(1, 1, 2, 2)
    assert confusion_counts(pred, target).tolist() == [1, 1, 1, 1]


def test_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        confusion_counts(torch.full((2, 2), 0.7), torch.ones(2, 2))


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_counts(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool))


def test_per_image_counts() -> None:
    pred = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    target = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    pred[0] = True
    target[0, 0, 0, 0] = True
    target[1, 0, 1, 1] = True
    per = per_image_counts(pred, target)
    assert per.shape == (3, 4)
    assert per.tolist() == [[1, 3, 0, 0], [0, 0, 1, 3], [0, 0, 0, 4]]
    assert per.sum(0).tolist() == confusion_counts(pred, target).tolist()
    assert per_image_counts(pred[0, 0], target[0, 0]).tolist() == [[1, 3, 0, 0]]


def test_scores_known_answer() -> None:
    counts = torch.tensor([2, 1, 2, 3])
    assert float(iou(counts)) == pytest.approx(2 / 5)
    assert float(dice(counts)) == pytest.approx(4 / 7)
    assert float(precision(counts)) == pytest.approx(2 / 3)
    assert float(recall(counts)) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([0, 0, 0, 9], (1.0, 1.0, 1.0, 1.0)),  # both empty: perfect
        ([0, 0, 3, 6], (0.0, 0.0, 0.0, 0.0)),  # nothing predicted, something to find
        ([0, 3, 0, 6], (0.0, 0.0, 0.0, 0.0)),  # false alarm on an empty target
    ],
)
def test_empty_conventions(counts: list[int], expected: tuple[float, ...]) -> None:
    c = torch.tensor(counts)
    assert (float(iou(c)), float(dice(c)), float(precision(c)), float(recall(c))) == expected


def test_scores_are_vectorised_over_images() -> None:
    per = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 5], [4, 0, 0, 0]])
    assert iou(per).tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    assert dice(per).dtype == torch.float64 and dice(per).shape == (3,)


def test_counts_must_have_four_entries() -> None:
    with pytest.raises(ValueError, match="last axis of 4"):
        iou(torch.tensor([1, 2, 3]))


def test_summarize_pools_counts_and_averages_images() -> None:
    per = torch.tensor([[4, 0, 0, 12], [1, 1, 1, 13]])  # IoU 1 and 1/3
    out = summarize(per.sum(0), per)
    assert set(out) == set(PIXEL_METRICS)
    assert out["iou"] == pytest.approx(5 / 7)  # pooled: tp 5, fp 1, fn 1
    assert out["dice"] == pytest.approx(10 / 12)
    assert out["precision"] == pytest.approx(5 / 6) and out["recall"] == pytest.approx(5 / 6)
    assert out["mean_image_iou"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["mean_image_dice"] == pytest.approx((1 + 0.5) / 2)
    assert image_sums(per).tolist() == pytest.approx([4 / 3, 1.5, 2.0])


def test_summarize_without_images_gives_nan_means() -> None:
    out = summarize(torch.zeros(4, dtype=torch.int64), torch.zeros(0, 4, dtype=torch.int64))
    assert out["iou"] == 1.0 and np.isnan(out["mean_image_iou"])


def test_all_reduce_without_process_group_is_a_copy() -> None:
    counts = torch.tensor([1, 2, 3, 4])
    out = all_reduce_counts(counts)
    assert out.tolist() == counts.tolist() and out is not counts
    per = torch.tensor([[1, 0, 0, 3]])
    assert summarize_distributed(per.sum(0), per) == summarize(per.sum(0), per)


# ---------------------------------------------------------------- data parallel (2-proc gloo)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(5, 1, 16, 16, generator=g) > 0.6
    pred = target ^ (torch.rand(5, 1, 16, 16, generator=g) > 0.8)
    pred[4] = False  # an image with a miss
    target[3] = False  # and one with an empty target
    return pred, target


def _matches(pred: torch.Tensor, target: torch.Tensor) -> list[dict[str, float]]:
    """Particle matches per image, particles = 4-connected components."""
    return [
        match_instances(ndimage.label(t[0].numpy())[0], ndimage.label(p[0].numpy())[0], 0.3)
        for p, t in zip(pred, target, strict=True)
    ]


def _shard_worker(rank: int, world: int, init_method: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        pred, target = _data()
        shard = slice(0, 3) if rank == 0 else slice(3, 5)  # uneven shards on purpose
        p, t = pred[shard], target[shard]
        particles = instance_totals(_matches(p, t))
        result = {
            "counts": all_reduce_counts(confusion_counts(p, t)),
            "summary": summarize_distributed(confusion_counts(p, t), per_image_counts(p, t)),
            "particles": summarize_instance_totals(all_reduce_counts(particles)),
        }
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(90)  # a stuck rendezvous must fail, not hang the run (~5 s normally)
def test_all_reduce_over_two_gloo_ranks_is_exact(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"  # no port to race for
    mp.spawn(_shard_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    pred, target = _data()
    counts = confusion_counts(pred, target)
    expected = summarize(counts, per_image_counts(pred, target))
    particles = summarize_instances(_matches(pred, target))
    assert particles["tp"] > 0 and particles["fp"] > 0
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["counts"].tolist() == counts.tolist()
        assert got["summary"].keys() == expected.keys()
        for key, value in expected.items():
            assert got["summary"][key] == pytest.approx(value, rel=1e-12), key
        for key, value in particles.items():
            assert got["particles"][key] == pytest.approx(value, rel=1e-12), key
