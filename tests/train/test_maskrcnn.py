"""Mask R-CNN through the real worker path: a few steps on tiny synthetic micrographs with
touching particles, validated with the particle metrics, checkpointed, resumed, written as an
artifact that loads alone, and used by predict, evaluate and a TorchScript export."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emseg_search.config import TrialConfig
from emseg_search.data import load_data
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.train.checkpoint import latest_checkpoint, load_checkpoint
from emseg_search.train.data import prepare_data
from emseg_search.train.session import LocalSession
from emseg_search.train.worker import run_worker

pytestmark = pytest.mark.slow

PARTICLES = ("val_particle_f1", "val_particle_precision", "val_panoptic_quality", "val_count_error")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs of 2 steps (3 tiles of 64 px each) with a stop after the first epoch and a
    resume; the artifact of the best epoch."""
    from emseg_search.train.outputs import finish_run

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("maskrcnn")
    data = ensure_synthetic_data(root / "synth", n=6, size=64)
    cfg = TrialConfig(
        data=str(data),
        arch="maskrcnn",
        encoder="mobilenet_v2",
        tile_size=64,
        tiles_per_image=2,
        batch_size=3,  # 3 training images: 6 tiles, 2 steps per epoch
        epochs=2,
        warmup_epochs=0,
        lr=1e-3,
        augment="flips",
        val_fraction=0.34,
        score_threshold=0.05,  # a 2-epoch model scores low: keep its few detections
    )
    prepared, _, fingerprint = prepare_data(cfg)
    config = {"trial": cfg.to_dict(), "prepared": prepared.to_dict(), "threads": 2}

    class Stop(Exception):
        pass

    class StopAfterFirst(LocalSession):
        def report(self, metrics: dict[str, Any], save: Any = None) -> None:
            super().report(metrics, save)
            raise Stop

    with pytest.raises(Stop):
        run_worker(config, StopAfterFirst(root / "ckpt"))
    session = LocalSession(root / "ckpt")
    run_worker(config, session)  # resumes at epoch 1
    checkpoint = latest_checkpoint(root / "ckpt")
    outcome = finish_run(cfg, root / "run", checkpoint, prepared, fingerprint, stride=1)
    return {
        "cfg": cfg,
        "data": data,
        "session": session,
        "checkpoint": checkpoint,
        "outcome": outcome,
        "root": root,
    }


def test_trains_validates_with_particle_metrics_and_resumes(trained: dict[str, Any]) -> None:
    reports = trained["session"].reports
    assert [r["epoch"] for r in reports] == [1]  # the resumed run trained epoch 1 only
    history = load_checkpoint(trained["checkpoint"]).history
    assert [r["epoch"] for r in history] == [0, 1]
    for row in history:
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
        for key in ("val_iou", *PARTICLES):
            assert 0.0 <= row[key] <= 1.0 or key == "val_count_error", (key, row[key])
    epochs = trained["outcome"].epochs
    assert list(epochs["epoch"]) == [0, 1]


def test_the_artifact_loads_alone_and_records_its_postprocessing(trained: dict[str, Any]) -> None:
    from emseg_search.inference.artifact import load_artifact

    art = load_artifact(trained["outcome"].model_dir)
    assert art.config.arch == "maskrcnn" and art.config.target == "instances"
    assert art.meta["postprocess"]["target"] == "instances"
    assert art.meta["postprocess"]["score_threshold"] == 0.05
    assert art.meta["stride"] == 1 and art.meta["classes"] == 3
    assert art.meta["detector"]["box_score_threshold"] == 0.05
    assert art.meta["detector"]["mask_threshold"] == 0.5
    best = load_checkpoint(trained["checkpoint"]).best
    for key, value in art.model.state_dict().items():
        assert torch.equal(value, best[key]), key
    with torch.inference_mode():
        assert art.model(torch.zeros(1, 1, 40, 52)).shape == (1, 3, 40, 52)


def test_predict_and_evaluate_use_the_same_particles(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    from emseg_search.inference.evaluation import evaluate_images, summarize
    from emseg_search.inference.prediction import predict_files
    from emseg_search.inference.predictor import Predictor

    predictor = Predictor.from_dir(trained["outcome"].model_dir, scale=0.75)
    data = load_data(trained["data"])
    item = data.subset(data.names[:1])[0]
    outputs = predictor.predict_outputs(item.image)
    assert outputs.shape == (3, *item.image.shape)
    ids = outputs[1]
    assert np.array_equal(ids, np.round(ids))  # resized back with nearest: ids stay ids
    done = evaluate_images(predictor, data.subset(data.names[:2]), progress=False)
    scores = summarize(done.rows)
    assert 0.0 <= scores["iou"] <= 1.0 and "particle_f1" in scores
    run = predict_files(
        predictor, [trained["data"] / "images" / f"{data.names[0]}.png"], tmp_path, progress=False
    )
    assert run.images == 1 and not run.failures
    assert (tmp_path / "instances" / f"{data.names[0]}.png").is_file()
    with pytest.raises(ValueError, match="TTA"):
        Predictor.from_dir(trained["outcome"].model_dir, tta=True)


def test_torchscript_export_gives_the_same_instances(trained: dict[str, Any]) -> None:
    """TorchScript (scripted, not traced): the exported file finds the same particles as the
    artifact on a micrograph of another size than the checks', with its own number of
    detections; export.json says what the maps are. ONNX is refused, naming the way out."""
    import json

    from emseg_search.inference.artifact import load_artifact
    from emseg_search.inference.export.errors import ExportError
    from emseg_search.inference.export.formats import export_model
    from emseg_search.inference.export.verify import check_inputs

    model_dir = trained["outcome"].model_dir
    result = export_model(model_dir, "torchscript", trained["root"] / "ts")
    assert result.ok and all(c.mask_mismatch == 0 for c in result.checks)
    info = json.loads(result.info_path.read_text())
    assert info["exporter"] == "torch.jit.script" and info["target"] == "instances"
    assert info["output"]["shape"] == ["N", 3, "H", "W"]
    assert info["verification"]["ok"]

    art = load_artifact(model_dir)
    x = torch.from_numpy(check_inputs(art, [(80, 112)])[0])  # a normalised micrograph
    scripted = torch.jit.load(str(result.model_path))
    with torch.no_grad():
        eager, exported = art.model(x), scripted(x)
    assert exported.shape == (1, 3, 80, 112)
    assert eager[:, 1].max() >= 2  # particles found: there is something to compare
    assert torch.equal(eager[:, 1], exported[:, 1])  # the same instance at every pixel
    assert torch.allclose(eager, exported, atol=1e-5)

    with pytest.raises(ExportError, match="--format torchscript"):
        export_model(model_dir, "onnx", trained["root"] / "onnx")


@pytest.mark.ray
def test_two_ray_train_workers_train_it_data_parallel(tmp_path: Path) -> None:
    """The Ray Train path: a TorchTrainer of 2 gloo workers (DDP, prepare_model), one epoch."""
    import pandas as pd
    import ray

    from emseg_search.inference.artifact import load_artifact
    from emseg_search.train.cluster import init_ray
    from emseg_search.train.driver import run_training

    data = ensure_synthetic_data(tmp_path / "synth", n=8, seed=5, size=64)
    cfg = TrialConfig(
        data=str(data),
        arch="maskrcnn",
        encoder="mobilenet_v2",
        tile_size=64,
        tiles_per_image=2,
        batch_size=2,
        epochs=1,
        warmup_epochs=0,
        augment="flips",
        val_fraction=0.25,
    )
    init_ray(num_cpus=2)
    try:
        outcome = run_training(cfg, tmp_path / "run", workers=2)
    finally:
        ray.shutdown()
    epochs = pd.read_parquet(tmp_path / "run" / "epochs.parquet")
    assert list(epochs["epoch"]) == [0] and epochs["val_particle_f1"].notna().all()
    assert load_artifact(outcome.model_dir).config.arch == "maskrcnn"


def test_evaluate_with_a_lower_score_threshold_finds_at_least_as_many(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """`evaluate --score-threshold` lowers the detector's threshold for that run: never fewer
    particles, recorded in the summary; refused for a semantic model's option."""
    import json

    from emseg_search.cli.evaluate import main as evaluate_main

    out = tmp_path / "eval.parquet"
    argv = [str(trained["outcome"].model_dir), "--data", str(trained["data"]), "--quiet"]
    argv += ["--out", str(out)]
    assert evaluate_main([*argv, "--score-threshold", "0.5"]) == 0
    strict = json.loads(out.with_suffix(".json").read_text())
    assert strict["options"]["score_threshold"] == 0.5
    assert evaluate_main([*argv, "--score-threshold", "0.01"]) == 0
    loose = json.loads(out.with_suffix(".json").read_text())
    assert loose["particle_n_pred"] >= strict["particle_n_pred"]
    assert evaluate_main([*argv, "--seed-threshold", "0.6"]) == 2  # no watershed seeds
