"""Training on a CUDA GPU through Ray Train: one GPU worker, nccl, mixed precision (bf16 where
the GPU has it, else fp16 with a GradScaler). Skipped without CUDA (tests/conftest.py); run
them on a GPU machine with `pytest -m gpu` (benchmarks/gpu_checks.sh runs them with the rest
of the GPU checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emseg_search.config import TrialConfig
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.inference.artifact import load_artifact
from emseg_search.models.precision import autocast_dtype

pytestmark = [pytest.mark.gpu, pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_gpu():
    import ray

    from emseg_search.train.cluster import init_ray

    resources = init_ray(num_cpus=4)
    assert resources.get("GPU", 0) >= 1, f"Ray sees no GPU: {resources}"
    yield
    ray.shutdown()


def test_autocast_is_bf16_where_the_gpu_has_it() -> None:
    cuda = torch.device("cuda")
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(cuda, True) == want
    assert autocast_dtype(cuda, False) is None
    assert autocast_dtype(torch.device("cpu"), True) is None


def test_one_gpu_worker_learns_with_nccl_and_mixed_precision(ray_gpu, tmp_path: Path) -> None:
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
        amp=True,
    )
    run = tmp_path / "run"
    outcome = run_training(cfg, run, workers=1, use_gpu=True)
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert list(epochs["epoch"]) == [0, 1, 2]
    assert np.isfinite(epochs["train_loss"]).all()
    assert epochs["val_iou"].iloc[-1] > epochs["val_iou"].iloc[0]

    art = load_artifact(outcome.model_dir)
    hw = art.meta["trained_on"]
    assert hw["device"] == "cuda" and hw["backend"] == "nccl" and hw["world"] == 1
    assert hw["gpu"] == torch.cuda.get_device_name(0)
    assert hw["amp"] == str(autocast_dtype(torch.device("cuda"), True)).removeprefix("torch.")

    # the artifact (weights saved on the CPU) predicts the same on the CPU as on the GPU
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        on_cpu = torch.sigmoid(art.model.cpu()(x))
        on_gpu = torch.sigmoid(art.model.cuda()(x.cuda())).cpu()
    assert torch.allclose(on_cpu, on_gpu, atol=2e-3)


def test_fp16_with_grad_scaler_trains_and_resumes(tmp_path: Path, monkeypatch) -> None:
    """The fp16 path (GPUs without bf16): the GradScaler scales the loss, its state goes into
    the checkpoint and a resumed run picks it up. In this process (LocalSession on cuda), so
    the bf16 check can be switched off."""
    from emseg_search.train.checkpoint import latest_checkpoint, load_checkpoint
    from emseg_search.train.data import prepare_data
    from emseg_search.train.session import LocalSession
    from emseg_search.train.worker import run_worker

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    data = ensure_synthetic_data(tmp_path / "synth", n=12, seed=4, size=64)
    cfg = TrialConfig(
        data=str(data),
        arch="deeplabv3plus",
        encoder="resnet18",
        tile_size=64,
        tiles_per_image=4,
        batch_size=4,
        epochs=2,
        warmup_epochs=0,
        augment="flips",
        val_fraction=0.34,
        amp=True,
    )

    def config(c: TrialConfig) -> dict:
        prepared, _, _ = prepare_data(c)
        return {"trial": c.to_dict(), "prepared": prepared.to_dict(), "threads": 2}

    folder = tmp_path / "ckpt"
    first = LocalSession(folder, device="cuda")
    run_worker(config(cfg), first)
    assert [r["epoch"] for r in first.reports] == [0, 1]
    assert all(np.isfinite(r["train_loss"]) for r in first.reports)
    state = load_checkpoint(latest_checkpoint(folder)).state
    assert state["hardware"] == {
        "device": "cuda",
        "gpu": torch.cuda.get_device_name(0),
        "backend": "",
        "world": 1,
        "amp": "float16",
    }
    assert state["scaler"] and state["scaler"]["scale"] > 0, "no GradScaler state saved"

    again = LocalSession(folder, device="cuda")
    run_worker(config(cfg.model_copy(update={"epochs": 3})), again)
    assert [r["epoch"] for r in again.reports] == [2]  # resumed after epoch 1
