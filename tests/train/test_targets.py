"""Every target end to end on synthetic micrographs with touching particles (exact instance
ids): a tiny training run validates with particle metrics, writes an artifact that records
its post-processing, and the artifact evaluates (the same particle F1 as validation), predicts
and exports; an artifact from before targets still loads as the binary model it is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from emseg_search.config import TrialConfig
from emseg_search.data import load_data
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.inference.artifact import load_artifact
from emseg_search.inference.evaluation import evaluate_images, summarize
from emseg_search.inference.export.formats import export_model
from emseg_search.inference.prediction import predict_files
from emseg_search.inference.predictor import Predictor
from emseg_search.models.registry import required_stride
from emseg_search.results.schemas import EPOCH_METRICS
from emseg_search.train.checkpoint import latest_checkpoint
from emseg_search.train.data import prepare_data
from emseg_search.train.outputs import finish_run
from emseg_search.train.session import LocalSession
from emseg_search.train.worker import run_worker

PARTICLE_COLUMNS = [
    "val_particle_precision",
    "val_particle_recall",
    "val_particle_f1",
    "val_panoptic_quality",
    "val_count_error",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 images: 3 train, 2 validation, 1 held-out test image; touching particles included
    return ensure_synthetic_data(tmp_path_factory.mktemp("data") / "synth", n=6, size=64)


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(data: Path, target: str) -> TrialConfig:
    return TrialConfig(
        data=str(data),
        arch="unet",
        encoder="resnet18",
        encoder_depth=3,
        tile_size=64,
        tiles_per_image=4,
        batch_size=4,
        epochs=2,
        warmup_epochs=0,
        lr=3e-3,
        augment="flips",
        val_fraction=0.34,
        target=target,
        boundary_width=1,
    )


@pytest.mark.parametrize("target", ["binary", "boundary", "distance"])
def test_a_target_trains_validates_evaluates_predicts_and_exports(
    synth: Path, tmp_path: Path, target: str
) -> None:
    cfg = _cfg(synth, target)
    prepared, data, fingerprint = prepare_data(cfg)
    session = LocalSession(tmp_path / "run")
    run_worker({"trial": cfg.to_dict(), "prepared": prepared.to_dict(), "threads": 1}, session)
    for report in session.reports:  # every validation scores particles
        assert (
            set(PARTICLE_COLUMNS) <= set(report) <= {"diverged", "stop_reason"} | set(EPOCH_METRICS)
        )
        assert 0.0 <= report["val_particle_f1"] <= 1.0 and report["val_count_error"] >= 0.0
    outcome = finish_run(
        cfg, tmp_path / "out", latest_checkpoint(session.folder), prepared, fingerprint,
        required_stride(cfg),
    )  # fmt: skip
    assert outcome.epochs[PARTICLE_COLUMNS].notna().all().all()

    art = load_artifact(outcome.model_dir)
    assert art.meta["target"] == target and art.meta["classes"] == cfg.classes
    assert art.meta["postprocess"] == {
        "target": target,
        "threshold": 0.5,
        "seed_threshold": 0.5,
        "split_touching": True,
        "min_area": 4,
        "min_relative_area": 0.0,
    }
    # evaluate scores the validation images with validation's post-processing: same numbers
    predictor = Predictor(art, tile_size=64)
    val = evaluate_images(predictor, data.subset(prepared.val), progress=False)
    summary = summarize(val.rows)
    assert summary["iou"] == pytest.approx(art.meta["metrics"]["val_iou"], abs=1e-9)
    assert summary["particle_f1"] == pytest.approx(art.meta["metrics"]["val_particle_f1"])
    assert summary["particle_count_error"] == pytest.approx(art.meta["metrics"]["val_count_error"])

    if target != "binary":  # evaluate's overrides of the recorded post-processing
        from dataclasses import replace

        from emseg_search.cli.evaluate import main as evaluate_main

        split, out = tmp_path / "val.txt", tmp_path / "eval.parquet"
        split.write_text("\n".join(prepared.val) + "\n")
        argv = [str(outcome.model_dir), "--data", str(synth), "--split", str(split)]
        argv += ["--out", str(out), "--quiet", "--tile-size", "64"]
        argv += ["--seed-threshold", "0.9", "--min-relative-area", "0.05"]
        assert evaluate_main(argv) == 0
        got = json.loads(out.with_suffix(".json").read_text())
        assert got["options"]["seed_threshold"] == 0.9
        assert got["options"]["min_relative_area"] == 0.05
        changed = Predictor(art, tile_size=64)
        changed.post = replace(art.postprocess, seed_threshold=0.9, min_relative_area=0.05)
        rows = evaluate_images(changed, data.subset(prepared.val), progress=False).rows
        assert got["particle_f1"] == pytest.approx(summarize(rows)["particle_f1"])
        assert got["particle_count_error"] == pytest.approx(summarize(rows)["particle_count_error"])

    image = data.subset(prepared.val)[0].image
    outputs = predictor.predict_outputs(image)
    assert outputs.shape == (cfg.classes, *image.shape)
    np.testing.assert_array_equal(
        predictor.predict_mask(image), art.postprocess.mask(outputs)[0].numpy()
    )
    # a sliding window (tiles of 32 px) and flip TTA blend every channel
    tiler = Predictor(art, tile_size=32, tta=True)
    tiled = tiler.predict_outputs(image)
    assert tiled.shape == outputs.shape and np.isfinite(tiled).all()
    assert tiler.throughput.windows > 1
    images = synth / "images"
    run = predict_files(predictor, sorted(images.iterdir())[:2], tmp_path / "pred", progress=False)
    assert run.images == 2 and not run.failures
    assert (tmp_path / "pred" / "instances").is_dir()

    result = export_model(outcome.model_dir, "torchscript", sizes=[(64, 64)])
    assert result.ok
    info = json.loads(result.info_path.read_text())
    assert info["target"] == target and info["output"]["shape"][1] == cfg.classes
    assert info["postprocess"] == art.meta["postprocess"]
    if target == "boundary" and importlib.util.find_spec("onnxruntime"):  # the export extra
        assert export_model(outcome.model_dir, "onnx", sizes=[(64, 64)]).ok  # 3 channels


def test_a_binary_artifact_from_before_targets_loads_unchanged(tmp_path: Path) -> None:
    from helpers import write_tiny_artifact

    out = write_tiny_artifact(tmp_path / "model", encoder_depth=3)
    meta = json.loads((out / "artifact.json").read_text())
    for key in ("target", "postprocess"):
        meta.pop(key)
    (out / "artifact.json").write_text(json.dumps(meta))
    config = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("target", "boundary_width", "target_weight", "seed_threshold"):
        config.pop(key)
    (out / "config.yaml").write_text(yaml.safe_dump(config))

    art = load_artifact(out)
    assert art.config.target == "binary" and art.postprocess.target == "binary"
    assert art.postprocess.threshold == art.threshold
    predictor = Predictor(art, tile_size=64)
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    assert predictor.predict_outputs(image).shape == (1, 64, 80)
    np.testing.assert_array_equal(
        predictor.predict_logits(image), predictor.predict_outputs(image)[0]
    )


def test_validation_and_evaluate_share_the_data(synth: Path) -> None:
    """The instance maps validation scores particles against are the data layer's."""
    data = load_data(synth)
    assert all(m.instances.dtype.kind in "iu" for m in data.items)
    # the synthetic set has touching particles: different ids 4-adjacent somewhere
    assert any(
        ((a != b) & (a > 0) & (b > 0)).any()
        for m in data.items
        for a, b in [(m.instances[:, :-1], m.instances[:, 1:])]
    )
