"""One data-parallel Ray Train run (2 gloo workers) end to end: learns, checkpoints, resumes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from emseg_search.config import TrialConfig
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.inference.artifact import load_artifact
from emseg_search.train.checkpoint import load_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from emseg_search.train.cluster import init_ray

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
    # where it trained, as the worker recorded it (a GPU run says cuda, nccl, bfloat16)
    assert art.meta["trained_on"] == {
        "device": "cpu",
        "gpu": "",
        "backend": "gloo",
        "world": 2,
        "amp": "off",
    }
    with torch.inference_mode():
        assert art.model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)

    # same run folder, one more epoch: resumes from the epoch-2 checkpoint, redoes nothing
    longer = cfg.model_copy(update={"epochs": 4})
    run_training(longer, run, workers=2)
    resumed = pd.read_parquet(run / "epochs.parquet")
    assert list(resumed["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(resumed.iloc[:3], epochs)


def test_train_without_a_split_uses_every_image_and_keeps_the_last_epoch(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The train command's default when no split is given: a final model on every image
    (but a data folder's test.csv)."""
    import json

    from emseg_search.cli.evaluate import main as evaluate_main
    from emseg_search.cli.train import main
    from emseg_search.data import scan_folder

    data = ensure_synthetic_data(tmp_path / "synth", n=10, seed=4, size=64)
    args = ["--data", str(data), "--arch", "unet", "--encoder", "resnet18", "--tile-size", "64"]
    args += ["--epochs", "2", "--warmup-epochs", "0", "--batch-size", "4", "--augment", "flips"]
    assert main([*args, "--results", str(tmp_path), "--name", "final"]) == 0
    assert "trained without a validation split" in capsys.readouterr().out
    run = tmp_path / "final"
    split = json.loads((run / "data.json").read_text())
    index = scan_folder(data)  # the synthetic set keeps a test.csv: those never train
    test = set(index.splits.get("test", ()))
    assert test and split["val"] == []
    assert split["train"] == sorted(n for n in index.names if n not in test)
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert list(epochs["best_epoch"]) == [0, 1] and epochs["val_iou"].isna().all()
    art = load_artifact(run / "model")
    assert art.config.val_fraction == 0.0 and art.meta["metrics"] == {"best_epoch": 1}
    # the artifact holds the weights of the last epoch, as checkpointed
    (state_file,) = (run / "ray").rglob("state.pt")
    last = load_checkpoint(state_file.parent).state["model"]  # loads with weights_only=True
    for key, value in art.model.state_dict().items():
        assert torch.equal(value, last[key]), key

    # a resume must not change what the checkpoints were trained with (only epochs may grow)
    resume = [*args, "--results", str(tmp_path), "--name", "final", "--resume"]
    assert main([*resume, "--val-fraction", "0.2"]) == 2
    assert "val_fraction: 0.0 -> 0.2" in capsys.readouterr().err

    # nothing was held out, so there is no validation split to score
    assert evaluate_main([str(run / "model"), "--data", str(data), "--split", "val"]) == 2
    assert "trained on every image (no validation split)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "run"])
def test_imagenet_weights_offline_fail_before_ray_starts(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--encoder-weights imagenet` without a hub: one line on the driver, exit 2, nothing
    written and no Ray started (it used to fail inside a worker, with a traceback)."""
    import ray

    from emseg_search.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = ensure_synthetic_data(tmp_path / "synth", n=6, seed=4, size=64)
    if command == "train":
        args = ["train", "--data", str(data), "--encoder", "resnet18", "--tile-size", "64"]
        args += ["--encoder-weights", "imagenet", "--results", str(tmp_path / "out")]
    else:
        space = tmp_path / "space.yaml"
        space.write_text(
            "name: hub\nbudget: {num_samples: 1}\nscheduler: {type: none, max_epochs: 1}\n"
            "fixed: {tile_size: 64, encoder: resnet18, encoder_weights: imagenet}\n"
            "parameters:\n  lr: {type: float, low: 0.001, high: 0.01}\n"
        )
        args = ["run", str(space), "--data", str(data), "--results", str(tmp_path / "out")]
    was_running = ray.is_initialized()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE=1" in err[0] and "'imagenet-offline'" in err[0]
    assert not (tmp_path / "out").exists()
    assert ray.is_initialized() == was_running


def test_a_failed_ray_train_run_is_one_line_pointing_at_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Ray Train gives up (a worker died, e.g. failing Ray's health check on a starved
    machine), `train` says why in one line and how to continue, exit 1, instead of Ray's
    traceback; the run folder keeps what was written."""
    import ray.train
    import ray.train.torch

    import emseg_search.train.cluster as cluster
    from emseg_search.cli.main import main

    class DyingTrainer:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def fit(self) -> None:
            died = RuntimeError("The actor died unexpectedly: health check failed\nmore detail")
            raise ray.train.WorkerGroupError("Training failed due to worker errors", {0: died})

    monkeypatch.setattr(cluster, "init_ray", lambda *a, **k: {"CPU": 2.0})
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", DyingTrainer)
    data = ensure_synthetic_data(tmp_path / "synth", n=6, seed=4, size=64)
    args = ["train", "--data", str(data), "--tile-size", "64", "--results", str(tmp_path / "r")]
    assert main([*args, "--name", "run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "worker 0: RuntimeError: The actor died unexpectedly: health check failed" in err[0]
    assert "--resume" in err[0] and str(tmp_path / "r" / "run") in err[0]
    assert (tmp_path / "r" / "run" / "config.yaml").is_file()  # what was written stays
