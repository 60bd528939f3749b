"""Particle outlines over micrographs and size histograms (emseg_search.inference.figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import disk
from PIL import Image

from emseg_search.data.readers import image_to_float01
from emseg_search.inference.figures import (
    PRED_COLOR,
    TRUE_COLOR,
    example_grid,
    learning_curves,
    overlay,
    size_histogram,
)
from emseg_search.particles.measurement import concat_particles, measure_particles


def test_overlay_colours_outlines_only() -> None:
    image = np.tile(np.linspace(0, 6000, 40), (40, 1)).astype(np.uint16)  # 16-bit ramp
    pred = disk(40, 40, [(20, 20, 8)])
    rgb = overlay(image, pred)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    outline = (rgb != rgb[..., :1]).any(axis=2)  # pixels that are not grey any more
    assert outline[20, 12] and tuple(rgb[20, 12]) == PRED_COLOR  # leftmost pixel of the disk
    assert outline.sum() == pytest.approx(2 * np.pi * 8, rel=0.3)  # a thin ring, no fill
    grey = np.round(image_to_float01(image) * 255).astype(np.uint8)
    assert np.array_equal(rgb[~outline][:, 0], grey[~outline])  # interior + ground unchanged
    assert grey[20, 20] not in (0, 255)
    assert np.array_equal(overlay(image, pred > 0), rgb)  # a bool mask outlines the same
    both = overlay(grey, pred, true_labels=pred)
    assert tuple(both[20, 12]) == PRED_COLOR and tuple(both[20, 11]) == TRUE_COLOR


def test_overlay_width_thickens_the_outline_only() -> None:
    grey = np.full((40, 40), 100, np.uint8)
    pred = disk(40, 40, [(20, 20, 10)])
    thin, thick = overlay(grey, pred), overlay(grey, pred, width=5)
    ring = lambda rgb: (rgb != 100).any(axis=2)  # noqa: E731
    assert ring(thin).sum() * 2 < ring(thick).sum()
    assert ring(thin)[ring(thick)].sum() == ring(thin).sum()  # the thin ring lies inside it
    assert not ring(thick)[20, 20] and not ring(thick)[0, 0]  # still an outline, not a fill


def test_overlay_outlines_touching_particles() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10], labels[5:15, 10:18] = 1, 2
    rgb = overlay(np.full((20, 20), 100, np.uint8), labels)
    assert tuple(rgb[10, 9]) == tuple(rgb[10, 10]) == PRED_COLOR
    assert tuple(rgb[10, 5]) == (100, 100, 100)


@pytest.mark.parametrize("with_true", [False, True])
def test_size_histogram_writes_png(tmp_path: Path, with_true: bool) -> None:
    pred = measure_particles(disk(80, 80, [(20, 20, 6), (50, 50, 10)]), pixel_size=1.5)
    true = measure_particles(disk(80, 80, [(20, 20, 7), (50, 50, 9)])) if with_true else None
    out = size_histogram(pred, tmp_path / "sub" / "h.png", true_particles=true)
    assert out.stat().st_size > 1000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_size_histogram_of_no_particles(tmp_path: Path) -> None:
    out = size_histogram(concat_particles([]), tmp_path / "h.png")
    assert out.stat().st_size > 1000


def test_learning_curves_draw_one_line_per_validated_run(tmp_path: Path) -> None:
    a = pd.DataFrame({"epoch": [0, 1, 2], "val_iou": [0.5, 0.7, 0.65]})
    b = pd.DataFrame({"epoch": [0, 1, 2], "val_iou": [np.nan, 0.6, np.nan]})
    never = pd.DataFrame({"epoch": [0, 1], "val_iou": [np.nan, np.nan]})  # trained on all
    out = learning_curves({"a": a, "b": b, "final": never}, tmp_path / "c.png")
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # the first two lines
    assert (44, 160, 44) not in colours  # no third line for a run that was never validated


def test_learning_curves_of_a_search_give_each_trial_its_own_colour(tmp_path: Path) -> None:
    import matplotlib

    runs = {
        f"t{i}": pd.DataFrame({"epoch": [0, 1], "val_iou": [0.5, 0.6 + i / 100]}) for i in range(12)
    }
    out = learning_curves(runs, tmp_path / "search.png")
    with Image.open(out) as im:
        colours = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}
    tab20 = {tuple(round(255 * v) for v in c) for c in matplotlib.colormaps["tab20"].colors[:12]}
    assert tab20 <= colours  # 12 distinct colours, not the 10-colour default cycle repeated


def test_example_grid_is_as_wide_as_its_panels_and_keeps_long_titles(tmp_path: Path) -> None:
    """Two shifts scored -> a two-panel page (it was six panels wide, four of them empty), and a
    long domain name wraps inside its panel instead of running off the page."""
    image = np.full((64, 64), 128, np.uint8)
    inst = disk(64, 64, [(32, 32, 10)])
    title = "synth:dense-small-carbon: dense-small-carbon_00000\nIoU 0.905, particle F1 0.97"
    two = example_grid([(title, image, inst, inst)] * 2, tmp_path / "two.png")
    six = example_grid([("none: a\nIoU 1", image, inst, inst)] * 6, tmp_path / "six.png")
    with Image.open(two) as a, Image.open(six) as b:
        assert a.width < 0.45 * b.width  # 2 of 6 panel widths, give or take margins
        rgb = np.asarray(a.convert("RGB"))
    ink = (rgb.sum(axis=2) < 200).any(axis=0)  # columns holding dark (title) text
    assert not ink[:2].any() and not ink[-2:].any()  # nothing cut at the page's edges
