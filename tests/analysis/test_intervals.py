"""Intervals and paired tests: known answers on hand-made per-image tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emseg_search.analysis.intervals import (
    architecture_interval,
    compare_final,
    group_counts,
    paired_difference,
    ratio,
    verdict,
)
from emseg_search.results.schemas import FINAL_SCHEMA


def images(
    arch: str, ious: list[float], groups: list[str] | None = None, seed: int = 0, union: int = 100
) -> pd.DataFrame:
    """A per-image table whose image i has IoU ious[i] over a union of ``union`` pixels."""
    n = len(ious)
    tp = np.round(np.asarray(ious) * union).astype(int)
    fp = (union - tp) // 2
    fn = union - tp - fp
    return pd.DataFrame(
        {
            "arch": arch,
            "seed": seed,
            "trial_id": f"t-{arch}",
            "name": [f"im{i}" for i in range(n)],
            "group": groups or [f"g{i}" for i in range(n)],
            "tp_px": tp,
            "fp_px": fp,
            "fn_px": fn,
            "iou": tp / union,
            "dice": 2 * tp / (2 * tp + fp + fn),
            "n_true": 10,
            "n_pred": 10,
            "particle_tp": np.round(np.asarray(ious) * 10).astype(int),
            "particle_f1": np.round(np.asarray(ious) * 10) / 10,
        }
    )


def test_ratio_sums_counts_and_nothing_to_find_scores_one() -> None:
    assert ratio(np.array([1.0, 3.0]), np.array([2.0, 6.0])) == pytest.approx(0.5)
    assert ratio(np.array([0.0]), np.array([0.0])) == 1.0
    # vectorised along the last axis, as scipy.stats.bootstrap calls it
    got = ratio(np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[2.0, 2.0], [2.0, 2.0]]))
    assert got.tolist() == [0.5, 1.0]


def test_group_counts_pool_images_and_seeds_of_a_group() -> None:
    a = images("unet", [0.5, 0.7, 0.9], groups=["p1", "p1", "p2"])
    b = images("unet", [0.5, 0.7, 0.9], groups=["p1", "p1", "p2"], seed=1)
    counts = group_counts(pd.concat([a, b]), "iou")
    assert counts.loc["p1", "num"] == 2 * (50 + 70) and counts.loc["p1", "den"] == 400
    assert counts.loc["p2", "num"] == 2 * 90


def test_architecture_estimate_is_the_pooled_iou_and_the_interval_holds_it() -> None:
    rng = np.random.default_rng(1)
    ious = rng.uniform(0.6, 0.95, 30).round(2).tolist()
    got = architecture_interval(images("unet", ious), "iou")
    assert got["estimate"] == pytest.approx(np.mean(ious))  # equal unions: the mean IoU
    assert got["ci_low"] < got["estimate"] < got["ci_high"]
    assert got["ci_high"] - got["ci_low"] < 0.15
    assert (got["n_images"], got["n_groups"], got["n_seeds"]) == (30, 30, 1)
    assert math.isnan(got["seed_std"])  # one seed


def test_seed_std_is_the_spread_of_the_seeds_scores() -> None:
    a = images("unet", [0.8] * 10, seed=0)
    b = images("unet", [0.6] * 10, seed=1)
    got = architecture_interval(pd.concat([a, b]), "iou")
    assert got["estimate"] == pytest.approx(0.7)
    assert got["seed_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))


def test_resampling_groups_copies_of_an_image_add_no_evidence() -> None:
    """Ten copies of each image in one group give the interval of the images alone: the
    group, not the image, is the unit (an image-level bootstrap would shrink it ~3x)."""
    rng = np.random.default_rng(2)
    ious = rng.uniform(0.5, 0.95, 20).round(2).tolist()
    alone = architecture_interval(images("unet", ious), "iou")
    copies = images(
        "unet",
        np.repeat(ious, 10).tolist(),
        groups=np.repeat([f"g{i}" for i in range(20)], 10).tolist(),
    )
    grouped = architecture_interval(copies, "iou")
    assert grouped["n_groups"] == 20 and grouped["n_images"] == 200
    assert grouped["ci_low"] == pytest.approx(alone["ci_low"], abs=1e-9)
    assert grouped["ci_high"] == pytest.approx(alone["ci_high"], abs=1e-9)


def test_paired_difference_sees_a_small_consistent_gain() -> None:
    """b is a with 0.02 less IoU on every image: the images vary far more than that, yet the
    paired interval excludes 0, a beats b on every image, and Wilcoxon rejects."""
    rng = np.random.default_rng(3)
    ious = rng.uniform(0.5, 0.95, 25).round(2)
    got = paired_difference(images("a", ious.tolist()), images("b", (ious - 0.02).tolist()), "iou")
    assert got["estimate"] == pytest.approx(0.02)
    assert 0 < got["ci_low"] <= 0.02 <= got["ci_high"]
    assert got["prob_superiority"] == 1.0
    assert got["wilcoxon_p"] < 1e-4
    row = {"arch": "a", "arch_b": "b", **got}
    assert "a is better" in verdict(row)


def test_paired_difference_of_equal_models_is_not_separable() -> None:
    rng = np.random.default_rng(4)
    a = rng.uniform(0.5, 0.95, 25).round(2)
    b = a + rng.choice([-0.03, 0.03], size=25)
    got = paired_difference(images("a", a.tolist()), images("b", b.tolist()), "iou")
    assert got["ci_low"] < 0 < got["ci_high"]
    assert "not separable" in verdict({"arch": "a", "arch_b": "b", **got})
    ties = paired_difference(images("a", a.tolist()), images("b", a.tolist()), "iou")
    assert ties["prob_superiority"] == 0.5 and ties["estimate"] == 0.0
    assert math.isnan(ties["wilcoxon_p"])  # nothing differs: no test


def test_compare_final_rows_follow_the_declared_schema_best_first() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(0.6, 0.9, 12).round(2)
    frames = [
        images(arch, (base + shift).tolist(), seed=s)
        for arch, shift in (("unet", 0.0), ("fpn", 0.05), ("deeplabv3plus", -0.05))
        for s in (0, 1)
    ]
    table = compare_final(pd.concat(frames, ignore_index=True))
    assert list(table.columns) == FINAL_SCHEMA.names
    archs = table[table["kind"] == "architecture"]
    assert list(dict.fromkeys(archs["arch"])) == ["fpn", "unet", "deeplabv3plus"]
    assert set(archs["metric"]) == {"iou", "dice", "particle_f1"}
    diffs = table[table["kind"] == "difference"]
    assert set(zip(diffs["arch"], diffs["arch_b"], strict=True)) == {
        ("fpn", "unet"),
        ("fpn", "deeplabv3plus"),
    }
    assert (archs["n_seeds"] == 2).all() and archs["method"].str.contains("BCa").all()


def _shift_rows(arch: str, seed: int, loss: float) -> list[dict]:
    """FINAL_ROBUSTNESS_SCHEMA rows of 10 images: none at IoU 0.9, x0.5 ``loss`` lower on
    every image, and 4 synthetic images."""
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SCHEMA

    rows = []
    for shift, kind, names, iou in (
        ("none", "reference", [f"im{i}" for i in range(10)], 0.9),
        ("scale_x0.5", "scale", [f"im{i}" for i in range(10)], 0.9 - loss),
        ("synth:sem", "domain", [f"s{i}" for i in range(4)], 0.7),
    ):
        for name in names:
            tp = round(iou * 1000)
            row = dict.fromkeys(FINAL_ROBUSTNESS_SCHEMA.names)
            row.update(
                arch=arch, seed=seed, trial_id=f"t-{arch}", shift=shift, shift_kind=kind,
                name=name, tp_px=tp, fp_px=1000 - tp, fn_px=0, tn_px=9000, iou=tp / 1000,
                n_true=4, n_pred=4, particle_tp=3,
            )  # fmt: skip
            rows.append(row)
    return rows


def test_robustness_summary_is_written_once_and_redone_when_the_rows_change(
    tmp_path: Path,
) -> None:
    """`final --shifts`' summary per architecture: seeds pooled (images counted once), each
    shift of the test images with its interval; reread while it is newer than the rows,
    recomputed when they change (a resumed final that scored more runs)."""
    import os

    from emseg_search.analysis.intervals import robustness_summary_table
    from emseg_search.results.io import write_table
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SCHEMA

    assert robustness_summary_table(tmp_path) is None  # final without --shifts
    rows = _shift_rows("unet", 0, 0.05) + _shift_rows("unet", 1, 0.05)
    rows += _shift_rows("deeplabv3plus", 0, 0.0)
    write_table(rows, FINAL_ROBUSTNESS_SCHEMA, tmp_path / "robustness.parquet")
    summary = robustness_summary_table(tmp_path).set_index(["arch", "shift"])
    assert summary.loc[("unet", "none"), "seeds"] == 2
    assert summary.loc[("unet", "none"), "images"] == 10  # not 20: image x seed
    unet = summary.loc[("unet", "scale_x0.5")]
    assert unet["iou_change"] == pytest.approx(-0.05)
    assert unet["iou_change_ci_high"] < 0  # every image lost 0.05
    assert math.isnan(summary.loc[("unet", "synth:sem"), "iou_change_ci_low"])
    assert summary.loc[("deeplabv3plus", "scale_x0.5"), "iou_change"] == pytest.approx(0.0)
    path = tmp_path / "robustness_summary.parquet"
    written = path.stat().st_mtime_ns
    robustness_summary_table(tmp_path)
    assert path.stat().st_mtime_ns == written  # newer than the rows: read, not recomputed
    # the rows change (newer mtime): the summary follows them
    rows = _shift_rows("unet", 0, 0.10)
    write_table(rows, FINAL_ROBUSTNESS_SCHEMA, tmp_path / "robustness.parquet")
    later = written + 10**9
    os.utime(tmp_path / "robustness.parquet", ns=(later, later))
    again = robustness_summary_table(tmp_path).set_index(["arch", "shift"])
    assert set(again.index.get_level_values("arch")) == {"unet"}
    assert again.loc[("unet", "scale_x0.5"), "iou_change"] == pytest.approx(-0.10)
