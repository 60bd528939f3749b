"""One data-parallel Ray Train run (2 gloo workers) end to end: learns, checkpoints, resumes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from emseg_search.artifact import load_artifact
from emseg_search.config import TrialConfig
from emseg_search.data.synthetic_default import ensure_synthetic_data

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from emseg_search.ray_setup import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_two_workers_learn_checkpoint_and_resume(ray_local, tmp_path: Path) -> None:
    from emseg_search.train.driver import run_training

    data = ensure_synthetic_data(tmp_path / "synth", n=48, seed=3, size=64)
    cfg = TrialConfig(
        data=str(data),
        arch="unet",
        encoder="resnet18",
        tile_size=64,
        tiles_per_image=6,
        batch_size=8,
        epochs=3,
        warmup_epochs=0,
        lr=2e-3,
        augment="flips",
        val_fraction=0.25,
    )
    run = tmp_path / "run"
    first = run_training(cfg, run, workers=2)
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert list(epochs["epoch"]) == [0, 1, 2]
    assert epochs["val_iou"].iloc[-1] > epochs["val_iou"].iloc[0]
    assert first.best_val_iou == pytest.approx(epochs["val_iou"].max())

    art = load_artifact(first.model_dir)
    assert art.config == cfg.model_copy(update={"encoder_weights": None})
    assert art.meta["metrics"]["val_iou"] == pytest.approx(first.best_val_iou)
    with torch.inference_mode():
        assert art.model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)

    # same run folder, one more epoch: resumes from the epoch-2 checkpoint, redoes nothing
    longer = cfg.model_copy(update={"epochs": 4})
    run_training(longer, run, workers=2)
    resumed = pd.read_parquet(run / "epochs.parquet")
    assert list(resumed["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(resumed.iloc[:3], epochs)
