"""`evaluate`: per-image table, data-set summary, agreement with an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_folder, write_tiny_artifact
from PIL import Image

from emseg_search.cli.evaluate import main
from emseg_search.data import load_data, resolve_split
from emseg_search.inference.evaluation import score_image, summarize
from emseg_search.results.schemas import IMAGE_SCHEMA


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = make_folder(root / "data", n=5, size=(48, 64))
    return write_tiny_artifact(root / "model", threshold=0.52), data


def test_table_agrees_with_the_masks_it_wrote(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = setup
    out = tmp_path / "eval.parquet"
    masks, ov = tmp_path / "masks", tmp_path / "ov"
    code = main([str(model), "--data", str(data), "--out", str(out), "--quiet",
                 "--masks", str(masks), "--overlays", str(ov)])  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == IMAGE_SCHEMA.names
    assert sorted(table["name"]) == [f"img{i:02d}" for i in range(5)]
    inter = union = 0
    for row in table.itertuples():
        pred = np.asarray(Image.open(tmp_path / "masks" / f"{row.name}.png")) > 0
        true = np.asarray(Image.open(data / "segmaps" / f"{row.name}.png")) > 0
        assert pred.shape == true.shape == (48, 64)
        i, u = int((pred & true).sum()), int((pred | true).sum())
        assert row.iou == pytest.approx(i / u)
        assert (
            row.n_true
            == len(np.unique(np.asarray(Image.open(data / "segmaps" / f"{row.name}.png")))) - 1
        )
        inter, union = inter + i, union + u
        assert (tmp_path / "ov" / f"{row.name}.png").is_file()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["iou"] == pytest.approx(inter / union)  # data-set IoU: summed pixels
    assert summary["mean_image_iou"] == pytest.approx(table["iou"].mean())
    assert summary["images"] == 5
    assert out.with_name("eval_sizes.png").stat().st_size > 0


class PerfectPredictor:
    """Stands in for inference.Predictor: returns a fixed mask (segment() calls predict_mask)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        return self.mask


def test_particle_scores_of_a_perfect_and_of_a_half_prediction(setup: tuple[Path, Path]) -> None:
    _, data = setup
    item = load_data(data).items[0]
    perfect, _, _ = score_image(PerfectPredictor(item.mask), item)
    assert perfect["iou"] == 1.0 and perfect["particle_f1"] == 1.0
    assert perfect["n_true"] == perfect["n_pred"] == 2
    assert perfect["size_wasserstein_px"] == 0.0
    half = item.instances == item.instances.max()  # only the second disk found
    row, _, _ = score_image(PerfectPredictor(half), item)
    assert (row["n_pred"], row["particle_tp"]) == (1, 1)
    assert row["particle_precision"] == 1.0 and row["particle_recall"] == 0.5
    assert row["size_wasserstein_px"] > 0
    assert perfect["median_diameter_error"] == 0.0
    d = np.sqrt(np.bincount(item.instances.ravel())[1:] * 4 / np.pi)  # equivalent diameters
    assert row["median_diameter_error"] == pytest.approx((d[-1] - np.median(d)) / np.median(d))
    both = summarize([perfect, row])
    assert both["median_diameter_error"] == pytest.approx(abs(row["median_diameter_error"]) / 2)
    assert both["particle_recall"] == pytest.approx(3 / 4)  # from summed particle counts
    assert both["particle_precision"] == 1.0


def test_split_val_scores_the_models_own_validation_images(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = setup
    out = tmp_path / "val.parquet"
    assert (
        main([str(model), "--data", str(data), "--split", "val", "--out", str(out), "--quiet"]) == 0
    )
    expected = resolve_split(load_data(data).index, 0.2, 0).val  # TrialConfig defaults
    assert sorted(pd.read_parquet(out)["name"]) == sorted(expected)
    assert "validation split" in json.loads(out.with_suffix(".json").read_text())["split"]


def test_bad_inputs_exit_2_with_one_message(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    model, data = setup
    assert main([str(tmp_path), "--data", str(data), "--quiet"]) == 2
    assert f"{tmp_path}: not a model artifact" in capsys.readouterr().err
    split = tmp_path / "names.txt"
    split.write_text("img00\nnope\n")
    assert main([str(model), "--data", str(data), "--split", str(split), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "names.txt" in err and "nope" in err
    assert main([str(model), "--data", str(tmp_path / "absent"), "--quiet"]) == 2
    assert "absent" in capsys.readouterr().err


def test_scale_options_run_and_are_recorded(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """--scale auto / a number and --scale-tta: every image scored, the scale it ran at in the
    table, the options in the summary."""
    model, data = setup
    out = tmp_path / "auto.parquet"
    argv = [str(model), "--data", str(data), "--out", str(out), "--quiet"]
    assert main([*argv, "--scale", "auto", "--scale-tta", "0.75,1"]) == 0
    table = pd.read_parquet(out)
    assert len(table) == 5 and table["working_scale"].notna().all()
    options = json.loads(out.with_suffix(".json").read_text())["options"]
    assert options["scale"] == "auto" and options["scale_tta"] == [0.75, 1.0]
    assert main([*argv, "--scale", "2"]) == 0
    assert (pd.read_parquet(out)["working_scale"] == 2.0).all()


def test_min_relative_area_drops_particles_and_is_recorded(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """--min-relative-area overrides the artifact's post-processing: never more particles
    than without it, fewer where the image has small ones beside larger ones."""
    model, data = setup
    out = tmp_path / "rel.parquet"
    argv = [str(model), "--data", str(data), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    plain = pd.read_parquet(out)
    assert json.loads(out.with_suffix(".json").read_text())["options"]["min_relative_area"] is None
    assert main([*argv, "--min-relative-area", "0.9"]) == 0
    filtered = pd.read_parquet(out)
    options = json.loads(out.with_suffix(".json").read_text())["options"]
    assert options["min_relative_area"] == 0.9
    assert (filtered["n_pred"] <= plain["n_pred"]).all()
    assert (filtered["n_pred"] >= (plain["n_pred"] > 0)).all()  # the largest always stays
    # the tiny artifact is a binary model: no watershed seeds to set
    assert main([*argv, "--seed-threshold", "0.7"]) == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--scale", "huge"], "--scale must be 'auto' or a number in (0, 16], got 'huge'"),
        (["--scale", "-1"], "--scale must be 'auto' or a number"),
        (["--scale-tta", "1,x"], "--scale-tta must be a comma list of factors"),
        (["--scale-tta", "0,1"], "--scale-tta must be a comma list of factors"),
        (["--min-relative-area", "1.5"], "--min-relative-area must lie in [0, 1), got 1.5"),
        (["--seed-threshold", "0"], "--seed-threshold must lie in (0, 1), got 0.0"),
    ],
)
def test_bad_scale_options_exit_2_before_reading_data(
    setup: tuple[Path, Path], tmp_path: Path, capsys, option: list[str], message: str
) -> None:
    model, _ = setup
    # the data folder does not exist: the option is refused before anything reads it
    assert main([str(model), "--data", str(tmp_path / "absent"), "--quiet", *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "absent" not in err
