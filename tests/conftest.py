"""Shared fixtures: offline environment, tiny hand-made data folders, marker skips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `realdata` tests without EMSEG_EMPS_DIR and `gpu` tests without CUDA."""
    emps = os.environ.get("EMSEG_EMPS_DIR")
    no_data = pytest.mark.skip(reason="EMSEG_EMPS_DIR is not set to the EMPS training data")
    for item in items:
        if "realdata" in item.keywords and not (emps and Path(emps).is_dir()):
            item.add_marker(no_data)
        if "gpu" in item.keywords:
            import torch

            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU"))


def disk(h: int, w: int, centres: list[tuple[int, int, int]]) -> np.ndarray:
    """Instance labels (h, w) uint16 with one disk per (row, col, radius), ids 1..N."""
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.uint16)
    for i, (r, c, rad) in enumerate(centres, start=1):
        lab[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = i
    return lab


def make_folder(
    root: Path, n: int = 4, size: tuple[int, int] = (48, 64), layout: str = "emps", seed: int = 0
) -> Path:
    """Write a tiny data set: dark disks on a bright ground, EMPS (segmaps) or images/+masks."""
    rng = np.random.default_rng(seed)
    mask_dir = "segmaps" if layout == "emps" else "masks"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        lab = disk(h, w, [(h // 3, w // 3, 6 + i % 3), (2 * h // 3, 2 * w // 3, 8)])
        img = np.where(lab > 0, 60, 200) + rng.integers(0, 20, size=(h, w))
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"img{i:02d}.png")
        if layout == "emps":
            Image.fromarray(lab).save(root / mask_dir / f"img{i:02d}.png")
        else:
            Image.fromarray(((lab > 0) * 255).astype(np.uint8)).save(
                root / mask_dir / f"img{i:02d}.png"
            )
    return root


@pytest.fixture
def emps_folder(tmp_path: Path) -> Path:
    """A valid 4-image EMPS-layout folder."""
    return make_folder(tmp_path / "emps")


def write_tiny_artifact(
    out: Path,
    seed: int = 0,
    mean: float = 0.5,
    std: float = 0.25,
    metrics: dict | None = None,
    **fields: object,
) -> Path:
    """A random-init model artifact (resnet18 UNet unless ``fields`` say otherwise), written
    as training writes one; no weights are downloaded."""
    import torch

    from emseg_search.artifact import write_artifact
    from emseg_search.config import TrialConfig
    from emseg_search.data import compute_fingerprint
    from emseg_search.data.loading import Micrograph
    from emseg_search.models import build_model, required_stride

    cfg = TrialConfig(**{"arch": "unet", "encoder": "resnet18", **fields})
    torch.manual_seed(seed)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    sample = Micrograph(
        "s", rng.integers(0, 255, (64, 64), dtype=np.uint8), disk(64, 64, [(32, 32, 9)])
    )
    return write_artifact(
        out,
        cfg,
        model.state_dict(),
        mean=mean,
        std=std,
        normalization_source="test",
        fingerprint=compute_fingerprint([sample]),
        stride=required_stride(cfg),
        metrics=metrics or {"val_iou": 0.5, "best_epoch": 0},
    )
