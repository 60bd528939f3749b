"""search/final.py without Ray: which trials are retrained, how, on which test images, and
what a resumed `final` may change (the Ray path runs in tests/cli/test_final.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_folder, write_tiny_artifact

from emseg_search.data import load_data
from emseg_search.data.splits import write_split_file
from emseg_search.results.io import write_table
from emseg_search.results.schemas import trial_schema
from emseg_search.search.final import (
    FinalError,
    best_per_architecture,
    check_settings,
    retrain_config,
    select_test_images,
)


@pytest.fixture
def experiment(tmp_path: Path) -> tuple[Path, Path]:
    data = make_folder(tmp_path / "data", n=8, size=(64, 64))
    exp = tmp_path / "exp"
    rows = []
    for i, (arch, iou) in enumerate([("unet", 0.6), ("unet", 0.7), ("fpn", 0.65), ("fpn", 0.9)]):
        model = None
        if i != 3:  # the best fpn trial lost its model: the next best fpn is retrained
            model = write_tiny_artifact(
                exp / f"m{i}",
                seed=i,
                arch=arch,
                data=str(data),
                val_fraction=0.25,
                lr=0.01 * i + 0.01,
            )
        rows.append(
            {
                "trial_id": f"t{i}",
                "status": "completed",
                "best_val_iou": iou,
                "model_dir": None if model is None else str(model),
                "params_arch": arch,
            }
        )
    rows.append({"trial_id": "t4", "status": "error", "params_arch": "unet"})
    write_table(rows, trial_schema(["arch"]), exp / "trials.parquet")
    return exp, data


def test_best_trial_of_each_architecture_with_the_configuration_it_trained(experiment) -> None:
    exp, _ = experiment
    got = best_per_architecture(exp)
    assert [(c.arch, c.trial_id) for c in got] == [("unet", "t1"), ("fpn", "t2")]
    assert got[0].config.lr == pytest.approx(0.02) and got[0].best_val_iou == 0.7
    assert [c.arch for c in best_per_architecture(exp, ["fpn"])] == ["fpn"]
    with pytest.raises(FinalError, match="deeplabv3plus not among .*fpn, unet"):
        best_per_architecture(exp, ["deeplabv3plus"])
    with pytest.raises(FinalError, match="no trials.parquet"):
        best_per_architecture(exp / "nothing")


def test_retraining_keeps_the_trials_pretrained_encoder(experiment) -> None:
    """The artifact loader drops encoder_weights (its weights.pt has them); a retraining from
    scratch must start from the ImageNet weights the trial started from, as it did."""
    exp, _ = experiment
    config = exp / "m1" / "config.yaml"
    config.write_text(
        config.read_text().replace("encoder_weights: null", "encoder_weights: imagenet-offline")
    )
    unet = best_per_architecture(exp)[0]
    assert unet.trial_id == "t1" and unet.config.encoder_weights == "imagenet-offline"
    assert retrain_config(unet, 1, None).encoder_weights == "imagenet-offline"


def test_retrain_config_trains_on_train_and_validation_seeded(experiment) -> None:
    exp, _ = experiment
    cand = best_per_architecture(exp)[0]
    cfg = retrain_config(cand, seed=2, test_file=Path("/x/test.csv"), epochs=7)
    assert (cfg.seed, cfg.val_fraction, cfg.val_file, cfg.epochs) == (2, 0.0, None, 7)
    assert cfg.test_file == "/x/test.csv" and cfg.lr == cand.config.lr
    assert retrain_config(cand, 0, None).epochs == cand.config.epochs


def test_test_images_must_be_held_out_of_the_search(experiment, tmp_path: Path) -> None:
    exp, data = experiment
    cfg = best_per_architecture(exp)[0].config
    with pytest.raises(FinalError, match="the folder the search trained on: pass --split FILE"):
        select_test_images(data, None, cfg)
    seen = write_split_file(tmp_path / "seen.csv", ["img00", "img01"])
    with pytest.raises(FinalError, match="2 of its 2 images were in the search's training"):
        select_test_images(data, str(seen), cfg)
    # another folder: all of its images, nothing to hold out
    other = make_folder(tmp_path / "other", n=3, size=(64, 64), seed=1)
    loaded, names, described, held = select_test_images(other, None, cfg)
    assert names == ["img00", "img01", "img02"] and held is None and described == "all images"
    assert loaded.root == load_data(other).root


def test_a_resumed_final_keeps_its_settings() -> None:
    recorded = {"test_data": "/d", "split": "test.csv", "tta": False, "epochs": None}
    recorded |= {"shifts": None, "shift_images": None}
    check_settings(recorded, {**recorded, "seeds": 5}, Path("final.json"))  # seeds may grow
    # robustness shifts only rescore the kept models: they may be added or changed
    check_settings(recorded, {**recorded, "shifts": ["invert"], "shift_images": 8}, Path("f"))
    with pytest.raises(FinalError, match=r"other settings \(tta, epochs\)"):
        check_settings(recorded, {**recorded, "tta": True, "epochs": 3}, Path("final.json"))
