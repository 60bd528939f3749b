"""Plain-torch training pieces: schedule, one epoch, divergence, full-resolution evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.utils.data import DataLoader

from emseg_search.config import TrialConfig
from emseg_search.data import Micrograph
from emseg_search.data.datasets import TileDataset, WholeImageDataset
from emseg_search.losses import build_loss
from emseg_search.train.loops import (
    DivergedError,
    build_optimizer,
    build_scheduler,
    evaluate,
    lr_factor,
    ms_per_megapixel,
    train_one_epoch,
)


def test_lr_schedule_known_points() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)
    assert lr_factor(0, 100, 0) == pytest.approx(1.0)


def test_scheduler_follows_the_factor() -> None:
    cfg = TrialConfig(epochs=2, warmup_epochs=1, lr=0.1)
    model = nn.Linear(2, 1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 / 5) and lrs[4] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.1) and lrs[-1] < lrs[6] < 0.1


def _disks(n: int = 6, size: int = 64) -> list[Micrograph]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        lab = np.zeros((size, size), np.uint16)
        for k in range(3):
            r, c = rng.integers(10, size - 10, 2)
            lab[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = k + 1
        img = np.where(lab > 0, 50, 200).astype(np.float64) + rng.normal(0, 15, lab.shape)
        out.append(Micrograph(f"d{i}", np.clip(img, 0, 255).astype(np.uint8), lab))
    return out


def _model() -> nn.Module:
    torch.manual_seed(0)
    return smp.Unet(
        "resnet18",
        encoder_weights=None,
        in_channels=1,
        classes=1,
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
    )


def test_training_improves_validation_iou() -> None:
    items = _disks()
    train = DataLoader(
        TileDataset(items, 32, mean=0.5, std=0.3, samples_per_epoch=32), batch_size=8, shuffle=True
    )
    val = DataLoader(WholeImageDataset(items[:2], mean=0.5, std=0.3, stride=8), batch_size=1)
    model = _model()
    cfg = TrialConfig(lr=3e-3, epochs=6, warmup_epochs=0)
    opt = build_optimizer(model, cfg)
    loss_fn = build_loss("dice+bce")
    before = evaluate(model, val, torch.device("cpu"))["iou"]
    for _ in range(6):
        stats = train_one_epoch(
            model, train, loss_fn, opt, None, torch.device("cpu"), grad_clip=1.0
        )
    after = evaluate(model, val, torch.device("cpu"))
    assert stats.images == 32 and math.isfinite(stats.train_loss)
    assert after["iou"] > before + 0.2 and after["iou"] > 0.5
    assert set(after) >= {"iou", "dice", "precision", "recall", "mean_image_iou"}


def test_nan_loss_stops_with_a_reason() -> None:
    items = _disks(2)
    train = DataLoader(TileDataset(items, 32, mean=0.5, std=0.3, samples_per_epoch=4), batch_size=2)
    model = _model()
    opt = build_optimizer(model, TrialConfig())

    def nan_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return logits.mean() * float("nan")

    with pytest.raises(DivergedError, match="loss became nan at step 0"):
        train_one_epoch(model, train, nan_loss, opt, None, torch.device("cpu"))


def test_evaluation_is_at_original_resolution() -> None:
    """A model at half scale is scored on full-size masks: a perfect 'model' scores 1.0."""
    items = _disks(2, size=64)

    class Oracle(nn.Module):
        """Returns large logits where the (normalised) image is dark: the particles."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x < 0).float() * 20 - 10

    val = DataLoader(
        WholeImageDataset(items, mean=0.5, std=0.3, stride=16, scale=1.0), batch_size=1
    )
    scores = evaluate(Oracle(), val, torch.device("cpu"))
    assert scores["iou"] > 0.9
    assert 0 < scores["ms_per_megapixel"] < math.inf  # the forward pass, timed
    half = DataLoader(
        WholeImageDataset(items, mean=0.5, std=0.3, stride=16, scale=0.5), batch_size=1
    )
    assert evaluate(Oracle(), half, torch.device("cpu"))["iou"] > 0.75


def test_ms_per_megapixel_pools_seconds_and_pixels() -> None:
    """0.75 s over 1.5 megapixels is 500 ms per megapixel; nothing timed is NaN."""
    assert ms_per_megapixel([(0.5, 1_000_000), (0.25, 500_000)]) == pytest.approx(500.0)
    assert math.isnan(ms_per_megapixel([]))
