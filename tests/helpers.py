"""Test helpers shared by the test modules (``from helpers import ...``; tests/ is on the
pytest pythonpath): tiny hand-made data folders, model artifacts and search spaces, and the
environment of the CLI subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image


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

    from emseg_search.config import TrialConfig
    from emseg_search.data import compute_fingerprint
    from emseg_search.data.loading import Micrograph
    from emseg_search.inference.artifact import write_artifact
    from emseg_search.models.registry import build_model, required_stride

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


class RunsCode:
    """Unpickling this runs a shell command (what a poisoned checkpoint in a bucket would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def write_poisoned(path: Path, marker: Path) -> Path:
    """A torch file whose tensors come with a pickle that would create ``marker``."""
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    return path


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess: this venv first on PATH, offline, no Ray token auth (a
    local Ray of the test's own), never another Ray's address."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}:{e['PATH']}"
    e.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", RAY_AUTH_MODE="disabled")
    e.pop("RAY_ADDRESS", None)
    return e


def write_tiny_space(
    path: Path,
    data: Path,
    *,
    name: str = "tiny",
    num_samples: int = 2,
    max_epochs: int = 2,
    workers: int = 1,
    archs: tuple[str, ...] = ("unet", "deeplabv3plus"),
    scheduler: dict | None = None,
    budget: dict | None = None,
) -> Path:
    """A CPU search space small enough for CI (64 px tiles of 64 px synthetic images, resnet18,
    arch and lr searched by TPE), written to ``path``. ``scheduler`` defaults to ASHA stopping
    after 1 epoch at rate 2; ``budget`` adds to num_samples (e.g. max_concurrent_trials)."""
    space = {
        "name": name,
        "data": str(data),
        "budget": {"num_samples": num_samples, **(budget or {})},
        "resources": {"workers": workers, "cpus_per_worker": 1},
        "scheduler": {
            "max_epochs": max_epochs,
            **(scheduler or {"type": "asha", "grace_period": 1, "reduction_factor": 2}),
        },
        "searcher": {"type": "optuna", "seed": 0, "n_startup_trials": 2},
        "fixed": {
            "tile_size": 64,
            "tiles_per_image": 2,
            "batch_size": 4,
            "encoder": "resnet18",
            "augment": "flips",
            "warmup_epochs": 0,
        },
        "parameters": {
            "arch": {"type": "categorical", "choices": list(archs)},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path
