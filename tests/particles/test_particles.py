"""Tests for particle labelling and per-particle tables (emseg_search.particles.measurement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import disk

from emseg_search.data.synth.generator import generate_sample
from emseg_search.particles.labelling import label_particles
from emseg_search.particles.matching import (
    diameter_distance,
    median_diameter_error,
    size_distribution_distance,
)
from emseg_search.particles.measurement import concat_particles, measure_particles, write_particles
from emseg_search.results.schemas import PARTICLE_COLUMNS, PARTICLE_SCHEMA


def ellipse(h: int, w: int, cy: float, cx: float, a: float, b: float) -> np.ndarray:
    """Instance map (h, w) int32 of one axis-aligned ellipse: semi-axes a (along x), b (y)."""
    yy, xx = np.mgrid[:h, :w]
    return (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1).astype(np.int32)


def test_disk_measurements() -> None:
    r = 20
    row = measure_particles(disk(80, 90, [(37, 41, r)]), name="d").iloc[0]
    assert row.image == "d" and row.particle_id == 1
    assert row.area_px == pytest.approx(np.pi * r**2, rel=0.02)
    assert row.equivalent_diameter_px == pytest.approx(2 * r, rel=0.02)
    assert row.major_axis_px == pytest.approx(2 * r, rel=0.02)
    assert row.minor_axis_px == pytest.approx(2 * r, rel=0.02)
    assert row.feret_max_px == pytest.approx(2 * r, rel=0.05)
    assert row.perimeter_px == pytest.approx(2 * np.pi * r, rel=0.03)
    assert row.circularity > 0.95 and row.solidity > 0.95 and row.eccentricity < 0.1
    assert (row.centroid_y, row.centroid_x) == pytest.approx((37, 41), abs=1e-6)
    bbox = (row.bbox_min_row, row.bbox_min_col, row.bbox_max_row, row.bbox_max_col)
    assert bbox == (37 - r, 41 - r, 37 + r + 1, 41 + r + 1)
    assert not row.touches_border
    assert np.isnan(row.mean_intensity) and np.isnan(row.pixel_size_nm) and np.isnan(row.area_nm2)


def test_ellipse_axes_and_shape() -> None:
    row = measure_particles(ellipse(70, 100, 35, 50, a=30, b=12)).iloc[0]
    assert row.major_axis_px == pytest.approx(60, rel=0.03)
    assert row.minor_axis_px == pytest.approx(24, rel=0.03)
    assert row.feret_max_px == pytest.approx(60, rel=0.05)
    assert row.eccentricity == pytest.approx(np.sqrt(1 - (12 / 30) ** 2), abs=0.02)
    assert row.circularity < 0.9  # an elongated particle is visibly less round than a disk


def test_pixel_size_scales_lengths_and_areas() -> None:
    labels = ellipse(70, 100, 35, 50, a=30, b=12)
    px = measure_particles(labels).iloc[0]
    nm = measure_particles(labels, pixel_size=2.5).iloc[0]
    assert nm.pixel_size_nm == 2.5 and nm.area_px == px.area_px
    assert nm.area_nm2 == pytest.approx(px.area_px * 2.5**2)
    for name in ("equivalent_diameter", "major_axis", "minor_axis", "feret_max", "perimeter"):
        assert nm[f"{name}_nm"] == pytest.approx(px[f"{name}_px"] * 2.5)
        assert nm[f"{name}_px"] == px[f"{name}_px"]
    with pytest.raises(ValueError, match="pixel_size"):
        measure_particles(labels, pixel_size=0.0)


def test_touching_disks_split_only_when_asked() -> None:
    mask = disk(60, 100, [(30, 30, 15), (30, 58, 15)]) > 0  # centres 28 px apart, overlapping
    assert label_particles(mask).max() == 1
    split = label_particles(mask, split_touching=True)
    assert split.dtype == np.int32 and split.max() == 2
    areas = np.bincount(split.ravel())[1:]
    assert areas.min() / areas.max() > 0.9
    assert areas.sum() == mask.sum()  # a split moves no pixel to the background


@pytest.mark.parametrize("split", [False, True])
def test_separate_disks_and_elongated_particle_stay_whole(split: bool) -> None:
    mask = disk(60, 100, [(30, 20, 12), (30, 70, 12)]) > 0
    assert label_particles(mask, split_touching=split).max() == 2
    rod = np.zeros((40, 120), bool)
    rod[14:26, 10:110] = True  # a 12 x 100 px rod: a flat distance ridge, not two particles
    assert label_particles(rod, split_touching=split).max() == 1


def test_split_keeps_particles_too_thin_to_split() -> None:
    mask = np.zeros((20, 30), bool)
    mask[10, 5:25] = True  # 1 px wide: its distance map has no maximum 1 px deep
    mask[2:4, 2:4] = True
    split = label_particles(mask, split_touching=True)
    assert split.max() == 2 and np.array_equal(split > 0, mask)


def test_min_area_drops_specks() -> None:
    mask = disk(40, 40, [(20, 20, 8)]) > 0
    mask[1, 1] = True
    mask[38, 1:3] = True
    assert label_particles(mask, min_area=0).max() == 3
    assert label_particles(mask).max() == 1  # default 4 px drops the 1- and 2-px specks
    assert label_particles(mask, min_area=3).max() == 1


def test_label_particles_rejects_probabilities() -> None:
    with pytest.raises(ValueError, match="threshold"):
        label_particles(np.full((8, 8), 0.7))


def test_empty_mask_gives_empty_table_with_all_columns(tmp_path: Path) -> None:
    labels = label_particles(np.zeros((32, 32), bool), split_touching=True)
    df = measure_particles(labels, image=np.zeros((32, 32), np.uint8), pixel_size=1.0)
    assert df.empty and list(df.columns) == list(PARTICLE_COLUMNS)
    assert df.dtypes["area_px"] == np.int64 and df.dtypes["touches_border"] == np.bool_
    both = concat_particles([df, measure_particles(disk(32, 32, [(16, 16, 5)]), name="b")])
    assert len(both) == 1 and list(both.columns) == list(PARTICLE_COLUMNS)
    table = pq.read_table(write_particles(concat_particles([df]), tmp_path / "p.parquet"))
    assert table.schema.equals(PARTICLE_SCHEMA) and table.num_rows == 0


def test_write_particles_round_trips(tmp_path: Path) -> None:
    a = measure_particles(disk(40, 40, [(10, 10, 4), (25, 25, 6)]), name="a", pixel_size=2.0)
    b = measure_particles(disk(40, 40, [(20, 20, 5)]), name="b")  # no pixel size: NaN nm
    df = concat_particles([a, b])
    back = pq.read_table(write_particles(df, tmp_path / "p.parquet"))
    assert back.schema.equals(PARTICLE_SCHEMA)
    pd.testing.assert_frame_equal(back.to_pandas(), df)


def test_touches_border() -> None:
    centres = [(0, 30, 6), (30, 0, 6), (59, 30, 5), (30, 59, 5), (30, 30, 6), (50, 50, 4)]
    df = measure_particles(disk(60, 60, centres)).set_index("particle_id")
    assert df.touches_border.tolist() == [True, True, True, True, False, False]


def test_mean_intensity_on_constant_disk() -> None:
    labels = disk(40, 40, [(20, 20, 8)])
    image = np.full((40, 40), 1000, np.uint16)
    image[labels > 0] = 4321
    row = measure_particles(labels, image=image).iloc[0]
    assert row.mean_intensity == pytest.approx(4321)  # native units, not stretched
    with pytest.raises(ValueError, match="shape"):
        measure_particles(labels, image=image[:30])


def test_measure_rejects_bool_mask() -> None:
    with pytest.raises(ValueError, match="label_particles"):
        measure_particles(np.ones((8, 8), bool))


def test_synthetic_sample_table_matches_instances() -> None:
    s = generate_sample([0, 1], 128)
    df = measure_particles(s.instances, image=s.image, name="s")
    ids = np.unique(s.instances)
    assert df.particle_id.tolist() == ids[ids > 0].tolist()
    assert df.area_px.sum() == (s.instances > 0).sum()


def test_size_distance_zero_for_identical_maps() -> None:
    labels = disk(80, 80, [(20, 20, 6), (50, 50, 10), (20, 60, 8)])
    assert size_distribution_distance(labels, labels) == 0.0


def test_size_distance_tracks_diameter_difference() -> None:
    centres = [(20, 20), (20, 60), (60, 20), (60, 60)]
    small = disk(80, 80, [(y, x, 8) for y, x in centres])
    large = disk(80, 80, [(y, x, 12) for y, x in centres])
    d = size_distribution_distance(small, large)
    assert d == pytest.approx(8.0, rel=0.05)  # diameters 16 vs 24 px
    assert size_distribution_distance(small, large, pixel_size=0.5) == pytest.approx(d * 0.5)


def test_size_distance_with_an_empty_side() -> None:
    labels = disk(40, 40, [(20, 20, 8)])
    empty = np.zeros_like(labels)
    d = size_distribution_distance(labels, empty)
    assert d == size_distribution_distance(empty, labels) == pytest.approx(16.0, rel=0.02)
    assert size_distribution_distance(empty, empty) == 0.0
    assert diameter_distance([], [3.0, 5.0]) == 4.0


def test_median_diameter_error_is_signed_relative_and_undefined_without_particles() -> None:
    assert median_diameter_error([10.0, 20.0, 30.0], [22.0]) == pytest.approx(0.1)
    assert median_diameter_error([10.0, 20.0], [9.0, 12.0]) == pytest.approx(-0.3)
    assert np.isnan(median_diameter_error([10.0], []))
    assert np.isnan(median_diameter_error([], [10.0]))
    with pytest.raises(ValueError, match="finite"):
        median_diameter_error([np.nan], [1.0])
