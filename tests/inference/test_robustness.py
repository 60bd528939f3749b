"""The robustness benchmark: shifts that keep image and mask together, domains, scores, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import disk, make_folder, write_tiny_artifact

from emseg_search.analysis.intervals import shift_change_intervals
from emseg_search.cli.evaluate import main
from emseg_search.data.shifts import DOMAINS, SHIFTS, apply_shift, domain_items, resolve
from emseg_search.data.synth.generator import generate_sample
from emseg_search.inference.robustness import robustness_score
from emseg_search.results.schemas import ROBUSTNESS_SCHEMA


@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, np.ndarray]:
    inst = disk(96, 128, [(30, 40, 10), (60, 90, 14), (70, 30, 6)])
    rng = np.random.default_rng(0)
    image = (np.where(inst > 0, 60, 190) + rng.integers(0, 30, inst.shape)).astype(np.uint8)
    return image, inst


@pytest.mark.parametrize("name", sorted(n for n, s in SHIFTS.items() if s.kind == "scale"))
def test_scale_shifts_resample_image_and_mask_together(
    name: str, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    image, inst = labelled
    factor = float(name.split("_x")[1])
    out_img, out_inst = apply_shift(name, image, inst)
    assert out_img.shape == out_inst.shape == (round(96 * factor), round(128 * factor))
    assert out_img.dtype == np.uint8 and out_inst.dtype == np.uint16
    # no invented ids; particles keep their place and relative size
    assert set(np.unique(out_inst)) <= set(np.unique(inst))
    for i in (1, 2):
        ratio = (out_inst == i).sum() / (inst == i).sum()
        assert ratio == pytest.approx(factor**2, rel=0.25)
    # the dark particles stay dark where the resampled mask says they are
    assert out_img[out_inst > 0].mean() < out_img[out_inst == 0].mean() - 80


@pytest.mark.parametrize("name", ["scale_x0.5", "scale_x0.25"])
def test_reduced_truth_is_what_the_reduced_image_shows(name: str) -> None:
    # two flat levels, particles at 60 on 190: a reduced pixel is darker than halfway exactly
    # where particles cover at least half of its area; the reduced truth must say the same
    inst = disk(97, 131, [(30, 40, 10.5), (60, 90, 14.2), (70, 30, 6.3), (33, 62, 7.7)])
    image = np.where(inst > 0, 60, 190).astype(np.uint8)
    out_img, out_inst = apply_shift(name, image, inst)
    clear = np.abs(out_img.astype(int) - 125) > 1  # not within a rounding step of halfway
    assert clear.mean() > 0.98
    np.testing.assert_array_equal((out_inst > 0)[clear], (out_img <= 125)[clear])
    # each reduced particle pixel belongs to a particle that covers it, none is invented
    assert set(np.unique(out_inst)) <= set(np.unique(inst))
    for k in np.unique(out_inst[out_inst > 0]):
        assert abs((out_inst == k).sum() - (inst == k).sum() * (out_img.size / image.size)) <= (
            2 * np.sqrt((inst == k).sum())
        )


@pytest.mark.parametrize(
    "name", sorted(n for n, s in SHIFTS.items() if s.kind not in ("scale", "reference"))
)
def test_intensity_shifts_change_the_image_not_the_mask_and_repeat(
    name: str, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    image, inst = labelled
    a_img, a_inst = apply_shift(name, image, inst)
    b_img, _ = apply_shift(name, image, inst)
    np.testing.assert_array_equal(a_inst, inst)
    assert a_img.shape == image.shape and not np.array_equal(a_img, image)
    np.testing.assert_array_equal(a_img, b_img)  # every model sees the same noise
    if name == "invert":
        np.testing.assert_array_equal(a_img, 255 - image)


def test_sixteen_bit_images_are_stretched_not_clipped(labelled) -> None:
    image, inst = labelled
    wide = image.astype(np.uint16) * 200
    out, _ = apply_shift("none", wide, inst)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_resolve_names_the_unknown_and_keeps_the_reference_first() -> None:
    assert resolve(None) == resolve("all") and resolve("all")[0] == "none"
    assert set(resolve("all")) == set(SHIFTS) | set(DOMAINS)
    assert resolve("invert,scale_x2") == ["none", "invert", "scale_x2"]
    with pytest.raises(ValueError, match=r"unknown shift\(s\) scale_x3.*valid: all"):
        resolve("invert,scale_x3")


def test_domains_are_deterministic_labelled_sets() -> None:
    a = domain_items("synth:dense-small-carbon", 2)
    b = domain_items("synth:dense-small-carbon", 2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        assert x.instances.max() > 0
    assert [m.name for m in a] == ["dense-small-carbon_000", "dense-small-carbon_001"]


def test_dense_small_carbon_scene_is_dense_and_small() -> None:
    s = generate_sample([5, 0], 256, scene="dense-small-carbon")
    ids, areas = np.unique(s.instances[s.instances > 0], return_counts=True)
    diameters = np.sqrt(4 * areas / np.pi)
    assert len(ids) >= 40 and np.median(diameters) < 256 / 12
    assert (s.instances > 0).mean() > 0.1
    with pytest.raises(ValueError, match="unknown `scene` 'nope'"):
        generate_sample(0, 64, scene="nope")


def test_robustness_score_is_the_mean_over_shifts_without_the_reference() -> None:
    table = pd.DataFrame(
        {
            "shift": ["none", "scale_x2", "invert", "synth:sem"],
            "iou": [0.9, 0.8, 0.4, 0.6],
            "particle_f1": [0.7, 0.5, 0.1, 0.3],
        }
    )
    score = robustness_score(table)
    assert score["robustness_iou"] == pytest.approx(0.6)
    assert score["robustness_f1"] == pytest.approx(0.3)
    assert score["reference_iou"] == 0.9 and score["shifts"] == 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("robust")
    data = make_folder(root / "data", n=3, size=(48, 64))
    return write_tiny_artifact(root / "model"), data


def _argv(setup: tuple[Path, Path], out: Path) -> list[str]:
    """evaluate's arguments for the tiny model on the tiny folder, writing ``out``."""
    model, data = setup
    return [str(model), "--data", str(data), "--out", str(out), "--quiet"]


def test_evaluate_shifts_writes_rows_summary_and_pictures(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "rob.parquet"
    argv = _argv(setup, out)
    assert main([*argv, "--shifts", "scale_x0.5,invert,synth:stem", "--domain-images", "2"]) == 0
    rows = pd.read_parquet(out)
    assert list(rows.columns) == ROBUSTNESS_SCHEMA.names
    assert rows.groupby("shift", sort=False).size().to_dict() == {
        "none": 3,
        "scale_x0.5": 3,
        "invert": 3,
        "synth:stem": 2,
    }
    half = rows[rows["shift"] == "scale_x0.5"]
    assert set(half["height"]) == {24} and set(half["width"]) == {32}  # scored at the new size
    assert set(rows.loc[rows["shift"] == "synth:stem", "shift_kind"]) == {"domain"}
    summary = json.loads(out.with_suffix(".json").read_text())
    per = {r["shift"]: r for r in summary["per_shift"]}
    expected = np.mean([per[s]["iou"] for s in ("scale_x0.5", "invert", "synth:stem")])
    assert summary["robustness_iou"] == pytest.approx(expected)
    for suffix in ("_chart.png", "_examples.png"):
        assert out.with_name(out.stem + suffix).stat().st_size > 10_000
    assert "robustness (mean over 3 shifts and domains)" in capsys.readouterr().out


def test_bad_shift_options_exit_2_before_loading_anything(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "never.parquet"
    base = _argv(setup, out)
    assert main([*base, "--shifts", "blur_x9"]) == 2
    assert "--shifts: unknown shift(s) blur_x9" in capsys.readouterr().err
    assert main([*base, "--shifts", "--masks", str(tmp_path / "m")]) == 2
    assert "--masks" in capsys.readouterr().err
    assert main([*base, "--shifts", "invert", "--domain-images", "0"]) == 2
    assert "--domain-images" in capsys.readouterr().err
    assert main([*base, "--shifts", "invert", "--max-images", "0"]) == 2
    assert "--max-images" in capsys.readouterr().err
    assert not out.exists()


def test_max_images_scores_a_seeded_sample(setup: tuple[Path, Path], tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        out = tmp_path / f"s{k}.parquet"
        assert main([*_argv(setup, out), "--max-images", "2", "--shifts", "invert"]) == 0
        runs.append(pd.read_parquet(out))
    names = runs[0].loc[runs[0]["shift"] == "none", "name"].tolist()
    assert len(names) == 2 and names == runs[1].loc[runs[1]["shift"] == "none", "name"].tolist()
    summary = json.loads((tmp_path / "s0.json").read_text())
    assert summary["split"].startswith("2 images sampled (seed 0)")


def _row(shift: str, kind: str, name: str, tp: int, fp: int) -> dict:
    """One image x shift row as evaluate_shifts writes it (only what summarize reads)."""
    return {
        "shift": shift, "shift_kind": kind, "name": name, "tp_px": tp, "fp_px": fp,
        "fn_px": 0, "tn_px": 10_000, "iou": tp / (tp + fp), "n_true": 4, "n_pred": 4,
        "particle_tp": 4, "mean_matched_iou": 0.8, "size_wasserstein_px": 1.0,
    }  # fmt: skip


def test_shift_changes_come_with_an_interval_over_images_and_the_median_image() -> None:
    """A pooled IoU change that rests on one image (it fails unshifted) gets a wide interval
    and a per-image median that says what most images did; a change every image shares gets
    a tight interval that excludes zero. Synthetic domains (other images) get none."""
    rows = []
    for i in range(12):
        # unshifted: image 0 fails (IoU 0.5, a large image), the others score 0.9
        tp = 9_000 if i == 0 else 900
        rows.append(_row("none", "reference", f"im{i}", tp, 9_000 if i == 0 else 100))
        # x0.5: every image loses 0.1 but image 0, which recovers to 0.9
        rows.append(_row("scale_x0.5", "scale", f"im{i}", tp // 4, 250 if i == 0 else 56))
        # dose: every image loses the same ~0.05
        rows.append(_row("dose_5", "noise", f"im{i}", tp, 11_000 if i == 0 else 158))
    rows += [_row("synth:stem", "domain", f"s{i}", 800, 200) for i in range(4)]
    table = shift_change_intervals(rows).set_index("shift")
    assert np.isnan(table.loc["none", "iou_change_ci_low"])
    assert np.isnan(table.loc["synth:stem", "iou_change_ci_low"])
    half, dose = table.loc["scale_x0.5"], table.loc["dose_5"]
    # pooled, x0.5 looks better than unshifted: image 0's recovery outweighs the 11 losses
    assert half["iou_change"] > 0
    assert half["iou_change_median_image"] == pytest.approx(0.8 - 0.9, abs=0.01)
    assert half["iou_change_ci_low"] < 0 < half["iou_change_ci_high"]  # rests on one image
    assert (
        dose["iou_change_ci_low"] - 1e-9 <= dose["iou_change"] <= dose["iou_change_ci_high"] + 1e-9
    )
    assert dose["iou_change_ci_high"] < 0  # every image lost: the interval says it is real
    assert dose["iou_change_ci_high"] - dose["iou_change_ci_low"] < 0.5 * (
        half["iou_change_ci_high"] - half["iou_change_ci_low"]
    )


def test_shift_intervals_pool_seeds_per_image() -> None:
    """Rows with several seeds' scores of the same images (as `final --shifts` writes them):
    the interval and the median pool them per image instead of pairing seed 0 with seed 1."""
    rows = []
    for seed, loss in ((0, 100), (1, 300)):
        for i in range(8):
            rows.append({**_row("none", "reference", f"im{i}", 900, 100), "seed": seed})
            rows.append({**_row("invert", "polarity", f"im{i}", 900, 100 + loss), "seed": seed})
    half = shift_change_intervals(rows).set_index("shift").loc["invert"]
    # per image: IoU 0.9 unshifted; inverted 0.818 (seed 0) and 0.692 (seed 1), mean 0.755
    assert half["iou_change_median_image"] == pytest.approx((900 / 1100 + 900 / 1300) / 2 - 0.9)
    eps = 1e-9  # every image changed alike: the interval may shrink to the estimate
    assert half["iou_change_ci_low"] - eps <= half["iou_change"] <= half["iou_change_ci_high"] + eps
    assert half["iou_change_ci_high"] < 0
