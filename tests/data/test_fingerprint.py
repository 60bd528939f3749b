"""Fingerprint known answers on hand-made micrographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emseg_search.data import Fingerprint, Micrograph, compute_fingerprint


def _items() -> list[Micrograph]:
    a_img = np.array([[0, 0, 255, 255]] * 4, np.uint8)  # mean 0.5, std 0.5
    a_lab = np.zeros((4, 4), np.uint16)
    a_lab[0, 0] = 1  # area 1
    a_lab[2:4, 2:4] = 5  # area 4 (labels need not be consecutive)
    b_img = np.full((2, 8), 255, np.uint8)  # mean 1, std 0
    b_lab = np.zeros((2, 8), np.uint16)
    return [Micrograph("a", a_img, a_lab), Micrograph("b", b_img, b_lab)]


def test_known_answers() -> None:
    fp = compute_fingerprint(_items())
    assert fp.n_images == 2
    assert fp.dtypes == ["uint8"]
    assert (fp.height.min, fp.height.max, fp.width.min, fp.width.max) == (2, 4, 4, 8)
    # 32 pixels: 8 zeros, 24 ones
    assert fp.intensity_mean == pytest.approx(0.75)
    assert fp.intensity_std == pytest.approx(np.sqrt(0.75 * 0.25))
    assert fp.foreground_fraction == pytest.approx(5 / 32)
    assert fp.n_particles == 2 and fp.images_without_particles == 1
    assert (fp.particles_per_image.min, fp.particles_per_image.max) == (0, 2)
    assert fp.particles_per_image.mean == pytest.approx(1.0)
    assert fp.particle_area_px["p50"] == pytest.approx(2.5)
    assert fp.particle_diameter_px["p50"] == pytest.approx(
        np.median(np.sqrt(4 * np.array([1.0, 4.0]) / np.pi))
    )
    assert fp.intensity_p01 < 0.01 and fp.intensity_p99 > 0.99


def test_json_round_trip_and_table(tmp_path: Path) -> None:
    fp = compute_fingerprint(_items())
    assert Fingerprint.load_json(fp.write_json(tmp_path / "fp.json")) == fp
    table = fp.to_table()
    assert "foreground fraction" in table and "0.156" in table


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty data set"):
        compute_fingerprint([])


def test_area_weighted_diameters_follow_the_foreground_pixels() -> None:
    """9 specks of 4 px and one 20x20 square: by count the median particle is a speck, by area
    (the particle a random foreground pixel belongs to) it is the square."""
    from emseg_search.data import Micrograph

    inst = np.zeros((64, 64), np.uint16)
    for k in range(9):
        inst[2 + 6 * k : 4 + 6 * k, 2:4] = k + 1
    inst[30:50, 30:50] = 10
    fp = compute_fingerprint([Micrograph("a", np.full((64, 64), 128, np.uint8), inst)])
    square = np.sqrt(4 * 400 / np.pi)
    assert fp.particle_diameter_px["p50"] == pytest.approx(np.sqrt(16 / np.pi))
    assert fp.particle_diameter_by_area_px == pytest.approx(
        {"p10": square, "p25": square, "p50": square, "p75": square, "p90": square}
    )
    assert "by area" in fp.to_table()
