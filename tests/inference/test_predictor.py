"""Full-resolution inference: training's numbers on whole images, tiles that agree, TTA, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import disk, write_tiny_artifact
from torch import nn

from emseg_search.config import TrialConfig
from emseg_search.data import Micrograph
from emseg_search.data.datasets import WholeImageDataset
from emseg_search.inference.artifact import ModelArtifact, load_artifact
from emseg_search.inference.predictor import Predictor, blend_window, tile_origins
from emseg_search.train.loops import full_resolution_logits

CFG = TrialConfig(arch="unet", encoder="resnet18", encoder_depth=3, threshold=0.4)  # stride 8


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Dark disks on a bright noisy ground (H, W) uint8, with pure 0 and 255 rows."""
    rng = np.random.default_rng(seed)
    centres = [(int(rng.integers(8, h - 8)), int(rng.integers(8, w - 8)), 9) for _ in range(8)]
    img = np.where(disk(h, w, centres) > 0, 60, 190) + rng.normal(0, 20, (h, w))
    img = np.clip(img, 0, 255).astype(np.uint8)
    img[0], img[-1] = 0, 255  # > 0.1 % of pixels each: 16-bit percentiles land on them
    return img


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained UNet(resnet18, depth 3) artifact written as training writes it."""
    return write_tiny_artifact(tmp_path_factory.mktemp("art") / "model", **CFG.to_dict())


@pytest.fixture(scope="module")
def artifact(model_dir: Path) -> Iterator[ModelArtifact]:
    """The artifact, loaded; torch on one thread (tiny inputs, and no OpenMP spinning when
    the cores are shared with other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_artifact(model_dir)
    torch.set_num_threads(threads)


def _with(artifact: ModelArtifact, model: nn.Module | None = None, **cfg: object) -> ModelArtifact:
    """The artifact with another model and/or config fields (scale, arch, ...)."""
    return dataclasses.replace(
        artifact,
        model=model if model is not None else artifact.model,
        config=artifact.config.model_copy(update=cfg),
    )


class Pointwise(nn.Module):
    """A per-pixel 'model' that records the shape of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.tanh(x) * 3 + x


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_whole_image_equals_training_evaluation(artifact: ModelArtifact, scale: float) -> None:
    art = _with(artifact, scale=scale)
    img = _image(157, 203)
    item = WholeImageDataset(
        [Micrograph("a", img, np.zeros(img.shape, np.uint16))],
        mean=art.mean,
        std=art.std,
        stride=8,
        scale=scale,
    )[0]
    with torch.inference_mode():
        size = tuple(int(v) for v in item["size"])
        expected = full_resolution_logits(art.model, item["image"][None], size, img.shape)
    pred = Predictor(art)
    got = pred.predict_logits(img)
    assert got.dtype == np.float32 and got.shape == img.shape
    np.testing.assert_allclose(got, expected[0, 0].numpy(), rtol=0, atol=1e-5)
    assert pred.throughput.windows == 1  # 157x203 fits a 1024 tile: one whole-image pass
    cut = np.float32(np.log(0.4 / 0.6))  # threshold 0.4 from the artifact, as evaluate cuts
    assert np.array_equal(pred.predict_mask(img), expected[0, 0].numpy() > cut)


@pytest.mark.parametrize(
    ("tile", "windows", "max_diff", "mean_diff"),
    [(64, 4 * 6, 0.25, 0.025), (96, 3 * 4, 0.1, 0.008)],
)
def test_tiled_agrees_with_whole_image(
    artifact: ModelArtifact, tile: int, windows: int, max_diff: float, mean_diff: float
) -> None:
    img = _image(157, 203, seed=1)  # neither side a multiple of the stride
    whole = Predictor(artifact).predict_proba(img)
    pred = Predictor(artifact, tile_size=tile, overlap=0.5, batch_size=5)
    tiled = pred.predict_proba(img)
    assert pred.throughput.windows == windows
    diff = np.abs(tiled - whole)
    # An untrained net with a receptive field wider than the tile differs near tile edges
    # only; tiles off the stride grid would differ everywhere (~5x the mean, 0.3 max).
    assert diff.mean() < mean_diff and diff.max() < max_diff
    assert ((tiled > 0.5) == (whole > 0.5)).mean() > 0.998


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_blending_is_exact_and_batches_are_bounded(artifact: ModelArtifact, overlap: float) -> None:
    """With a per-pixel model every tile agrees, so the blend must give the pixel's value."""
    model = Pointwise()
    pred = Predictor(_with(artifact, model), tile_size=64, overlap=overlap, batch_size=3)
    img = _image(157, 203)
    got = pred.predict_logits(img)
    x = torch.from_numpy((img.astype(np.float32) / 255 - artifact.mean) / artifact.std)
    np.testing.assert_allclose(got, (torch.tanh(x) * 3 + x).numpy(), rtol=0, atol=1e-5)
    tiles = model.shapes
    n = len(tile_origins(160, 64, overlap, 8)) * len(tile_origins(208, 64, overlap, 8))
    assert sum(s[0] for s in tiles) == n == pred.throughput.windows
    assert all(s[0] <= 3 and s[1:] == (1, 64, 64) for s in tiles)


@pytest.mark.parametrize("length", [64, 72, 160, 208, 1000])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tile_origins_cover_with_the_overlap(length: int, overlap: float) -> None:
    origins = tile_origins(length, 64, overlap, stride=8)
    assert origins[0] == 0 and origins[-1] == max(0, length - 64)
    assert all(o % 8 == 0 for o in origins)
    gaps = np.diff(origins)
    assert (gaps > 0).all() and (gaps <= 64 * (1 - overlap)).all()


def test_blend_window_is_smooth_and_never_zero() -> None:
    w = blend_window(64)
    assert w.shape == (64,) and w.min() >= 1e-3 and w.max() == pytest.approx(1.0, abs=1e-2)
    assert np.allclose(w, w[::-1]) and w[0] < 0.01 < w[16] < w[31]


@pytest.mark.parametrize(("scale", "tile"), [(0.5, 1024), (0.5, 32), (1.5, 64)])
def test_scale_returns_the_original_size(artifact: ModelArtifact, scale: float, tile: int) -> None:
    img = _image(101, 77)
    pred = Predictor(_with(artifact, scale=scale), tile_size=tile)
    mask = pred.predict_mask(img)
    assert mask.shape == (101, 77) and mask.dtype == np.bool_
    assert (pred.throughput.windows > 1) == (tile < 101 * scale)


def test_small_image_is_padded_to_the_minimum_input(artifact: ModelArtifact) -> None:
    """PAN (stride 8 at depth 3) needs 64 px at least: a 20x30 image runs as one 64x64 input."""
    model = Pointwise()
    pred = Predictor(_with(artifact, model, arch="pan"), tile_size=64)
    assert pred.predict_logits(_image(20, 30)).shape == (20, 30)
    assert model.shapes == [(1, 1, 64, 64)]


def test_16bit_input_takes_the_training_intensity_path(artifact: ModelArtifact) -> None:
    img8 = _image(96, 120)
    img16 = img8.astype(np.uint16) * 257  # percentiles 0 and 65535: the stretch is x / 65535
    pred = Predictor(artifact)
    np.testing.assert_array_equal(pred.predict_logits(img16), pred.predict_logits(img8))
    pred = Predictor(artifact, tile_size=64)
    assert np.isfinite(pred.predict_logits(img16 // 16)).all()  # 12 bits in a 16-bit file


@pytest.mark.parametrize("tile", [1024, 64])
def test_tta_is_flip_equivariant(artifact: ModelArtifact, tile: int) -> None:
    """Averaging over all four flips: predicting a flipped image gives the flipped prediction."""
    img = _image(96, 128)  # multiples of the stride (no padding), a symmetric tile grid
    tta = Predictor(artifact, tile_size=tile, tta=True)
    plain = Predictor(artifact, tile_size=tile)
    out, ref = tta.predict_logits(img), plain.predict_logits(img)
    assert out.shape == img.shape and np.isfinite(out).all()
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.5  # a smoothed version, not noise
    for flip in (np.fliplr, np.flipud):
        np.testing.assert_allclose(tta.predict_logits(flip(img)), flip(out), atol=1e-4)
    # the model alone is not equivariant, so the check above has teeth
    assert np.abs(plain.predict_logits(np.fliplr(img)) - np.fliplr(ref)).max() > 1e-2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile_size": 60}, "tile_size: .*multiple of 8, got 60; nearest valid: 56 or 64"),
        ({"tile_size": 0}, "tile_size"),
        ({"tile_size": 64.0}, "tile_size must be an integer"),
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\)"),
        ({"overlap": -0.1}, "overlap"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"scale": "big"}, "scale must be a number > 0, None or 'auto'"),
        ({"scale": 0.0}, r"scale must be in \(0, 16\]"),
        ({"scale_tta": ()}, "scale_tta factors"),
        ({"scale_tta": (1.0, 0.0)}, "scale_tta factors"),
    ],
)
def test_invalid_options_name_the_argument(
    artifact: ModelArtifact, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Predictor(artifact, **options)


def test_pan_tile_below_minimum_is_refused(artifact: ModelArtifact) -> None:
    with pytest.raises(ValueError, match="tile_size: .*of at least 64, got 32"):
        Predictor(_with(artifact, arch="pan"), tile_size=32)


def test_bad_images_and_thresholds_are_refused(artifact: ModelArtifact) -> None:
    pred = Predictor(artifact)
    with pytest.raises(ValueError, match="grey image"):
        pred.predict_logits(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        pred.predict_mask(_image(32, 32), threshold=1.0)


def test_from_dir_counts_throughput(model_dir: Path) -> None:
    pred = Predictor.from_dir(model_dir, tile_size=64, batch_size=8)
    img = _image(100, 130)
    pred.predict_proba(img)
    pred.predict_proba(img)
    t = pred.throughput
    assert t.images == 2 and t.windows == 2 * 2 * 3 and t.seconds > 0
    assert t.megapixels == pytest.approx(2 * 100 * 130 / 1e6)
    assert t.images_per_s == pytest.approx(2 / t.seconds)
    pred.reset_throughput()
    assert pred.throughput.images == 0


class DarkIsParticle(nn.Module):
    """A per-pixel 'model': dark pixels are particles (logit = -10 x), at any scale."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return -10 * x


def _disks(size: int, radius: int, n: int = 4) -> np.ndarray:
    """n x n dark disks of ``radius`` px on a bright ground, (size, size) uint8."""
    step = size // n
    centres = [
        (step // 2 + i * step, step // 2 + j * step, radius) for i in range(n) for j in range(n)
    ]
    return np.where(disk(size, size, centres) > 0, 40, 215).astype(np.uint8)


def _sized(artifact: ModelArtifact, p25: float | None, p90: float | None) -> ModelArtifact:
    """The artifact with a pointwise model and area-weighted training particle diameters
    p25 / p90 px (None: a fingerprint from before they were recorded)."""
    by_area = None if p25 is None else {"p10": p25, "p25": p25, "p50": p25, "p75": p90, "p90": p90}
    fingerprint = artifact.fingerprint.model_copy(update={"particle_diameter_by_area_px": by_area})
    art = _with(artifact, DarkIsParticle(), scale=1.0)
    return dataclasses.replace(art, fingerprint=fingerprint)


def test_particle_size_is_the_area_weighted_median_diameter() -> None:
    from emseg_search.inference.predictor import particle_size

    big = [(20, 20, 12), (20, 60, 12), (60, 20, 12)]  # 3 disks of r=12 (~ 24 px)
    specks = [(56 + 6 * k, 50 + 6 * j, 1) for k in range(3) for j in range(4)]  # 12 specks
    mask = disk(80, 80, big + specks) > 0
    d, n = particle_size(mask)
    assert n == 15  # specks count as particles...
    r12 = int((disk(80, 80, [(40, 40, 12)]) > 0).sum())
    assert d == pytest.approx(np.sqrt(4 * r12 / np.pi))  # ...but not in the estimate
    assert particle_size(mask[:40, :40]) == (None, 1)  # too few to estimate
    assert particle_size(mask, min_area=100)[1] == 3  # the specks filter


def test_working_scale_keeps_the_band_and_moves_to_its_nearer_edge() -> None:
    from emseg_search.inference.predictor import SizeBand, working_scale

    band = SizeBand(low=40, high=200)
    assert working_scale(None, 0.5, band) == 0.5  # nothing found: keep
    assert working_scale(300, 0.5, band) == 0.5  # 150 px at the model's input: inside
    assert working_scale(40, 0.5, band) == pytest.approx(1.0)  # 20 px -> 40 px
    assert working_scale(800, 0.5, band) == pytest.approx(0.25)  # 400 px -> 200 px
    assert working_scale(2, 0.5, band) == pytest.approx(2.0)  # at most 4x up
    assert working_scale(1e6, 0.5, band) == pytest.approx(0.0625)  # at most 8x down
    # never beyond 64 megapixels: an 8000 x 8000 image stays at 1.0, not 2.0
    assert working_scale(10, 0.5, band, (8000, 8000)) == pytest.approx(1.0)


def test_size_band_from_the_fingerprint_or_the_fallback(artifact: ModelArtifact) -> None:
    from emseg_search.inference.predictor import FALLBACK_BAND, SizeBand

    def trained(art: ModelArtifact, **fields: object) -> ModelArtifact:
        return dataclasses.replace(art, config=art.config.model_copy(update=fields))

    art = trained(_sized(artifact, 30, 90), augment="flips")  # no zoom
    assert SizeBand.of(trained(art, scale=0.5)) == SizeBand(15, 45)  # at the model's input
    old = trained(_sized(artifact, None, None), augment="flips")
    assert SizeBand.of(old) == SizeBand(*FALLBACK_BAND)  # scale 1
    assert SizeBand.of(trained(old, scale=0.5)) == SizeBand(*(e / 2 for e in FALLBACK_BAND))
    # particles zoomed 0.5-2x in training: the model has seen 0.5x p25 to 2x p90
    robust = trained(art, scale=0.5, augment="robust", augment_strength=1.0)
    assert SizeBand.of(robust) == SizeBand(7.5, 90)
    assert SizeBand.of(trained(robust, augment_strength=0.0)) == SizeBand(15, 45)


class SureOfLarge(nn.Module):
    """A 'model' sure of dark particles only where they fill a 9 px window: small particles
    come out faint (uncertain), the same particles enlarged come out sure."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        dark = torch.sigmoid(-10 * x)
        return 20 * (F.avg_pool2d(dark, 9, 1, 4, count_include_pad=False) - 0.3)


def test_auto_scale_rescales_small_particles_and_leaves_trained_sizes_alone(
    artifact: ModelArtifact,
) -> None:
    art = dataclasses.replace(_sized(artifact, 16, 40), model=SureOfLarge())
    fixed, auto = Predictor(art, tile_size=512), Predictor(art, tile_size=512, scale="auto")
    trained = _disks(160, 10)  # ~20 px particles: inside the band the model trained on
    np.testing.assert_array_equal(auto.predict_logits(trained), fixed.predict_logits(trained))
    assert auto.last_scale == 1.0 and art.model.sizes[-1] == (160, 160)  # one pass only
    small = _disks(96, 3)  # ~7 px particles: below the band, tried again at its lower edge
    mask = auto.predict_mask(small)
    assert mask.shape == small.shape
    assert auto.band is not None and auto.last_scale == pytest.approx(auto.band.low / 7, rel=0.1)
    assert len(art.model.sizes) == 4  # the model's scale, then the edge, where it is surer
    assert art.model.sizes[-2:] == [(96, 96), art.model.sizes[-1]]
    assert art.model.sizes[-1][0] == pytest.approx(96 * auto.last_scale, abs=8)
    assert np.mean(mask == (small < 128)) > 0.97  # still the particles, at the original size


def test_below_the_band_auto_runs_at_the_surest_of_its_scales(artifact: ModelArtifact) -> None:
    """An image whose particles measure below the band runs at the model's scale, the band's
    edge or the synthetic particles' size (where that enlarges it), whichever its predicted
    particles are surest at, and its logits are exactly that fixed scale's."""
    from emseg_search.inference.predictor import (
        MIN_AREA_PX,
        particle_entropy,
        particle_size,
        working_scale,
    )

    small = _disks(96, 3)
    for model, synthetic, expect in [
        (DarkIsParticle(), None, [1.0]),  # as sure at any scale: resizing only blurs the edges
        (SureOfLarge(), None, None),
        (SureOfLarge(), 10.0, None),  # a synthetic mix of ~10 px particles: a third scale
        (SureOfLarge(), 40.0, None),  # ...beyond the band: capped at 4x the model's scale
        (SureOfLarge(), 4.0, None),  # ...smaller than these: never below the model's scale
    ]:
        art = dataclasses.replace(_sized(artifact, 16, 40), model=model)
        auto = Predictor(art, tile_size=512, scale="auto")
        auto.synthetic_size = synthetic  # what a synthetic_mix measures (input_particle_size)
        logits = auto.predict_logits(small)
        first = Predictor(art, tile_size=512)
        limit = first._logit_threshold()
        diameter, _ = particle_size(first.predict_logits(small) > limit, MIN_AREA_PX)
        assert diameter is not None and auto.band is not None
        assert diameter < auto.band.low  # ~7 px
        edge = working_scale(diameter, 1.0, auto.band, small.shape)
        scales = auto.below_band_scales(diameter, edge, small.shape)
        assert scales[:2] == [1.0, pytest.approx(auto.band.low / diameter)]
        enlarges = synthetic is not None and synthetic > diameter
        assert len(scales) == (3 if enlarges else 2)
        if enlarges:
            assert scales[2] == pytest.approx(min(synthetic / diameter, 4.0), rel=0.01)
        sureness = {
            s: particle_entropy(Predictor(art, tile_size=512, scale=s).predict_logits(small), limit)
            for s in [1.0, auto.last_scale, *scales[1:]]
        }
        best = min(sureness.values())
        assert sureness[auto.last_scale] == best
        assert expect is None or [auto.last_scale] == expect
        fixed = Predictor(art, tile_size=512, scale=auto.last_scale).predict_logits(small)
        np.testing.assert_array_equal(logits, fixed)


def test_particle_entropy_is_how_unsure_the_predicted_particles_are() -> None:
    from emseg_search.inference.predictor import particle_entropy

    assert particle_entropy(np.array([-5.0, -3.0]), 0.0) == float("inf")  # nothing predicted
    sure = particle_entropy(np.array([30.0, 40.0, -9.0]), 0.0)  # the -9 pixel is not counted
    assert 0.0 <= sure < 1e-9
    assert particle_entropy(np.array([1e-6]), 0.0) == pytest.approx(np.log(2))  # a coin toss
    p = 1 / (1 + np.exp(-2.0))
    assert particle_entropy(np.array([2.0, 2.0]), 0.0) == pytest.approx(
        -(p * np.log(p) + (1 - p) * np.log(1 - p))
    )
    assert particle_entropy(np.array([500.0, 2.0]), -1.0) < particle_entropy(np.array([2.0]), 0)


def test_scale_tta_averages_logits_at_each_factor(artifact: ModelArtifact) -> None:
    art = _sized(artifact, 16, 40)
    img = _disks(64, 8)
    pred = Predictor(art, scale_tta=(0.5, 1.0, 2.0))
    out = pred.predict_logits(img)
    assert art.model.sizes[-3:] == [(32, 32), (64, 64), (128, 128)]  # one input per factor
    singles = [Predictor(art, scale=s).predict_logits(img) for s in (0.5, 1.0, 2.0)]
    np.testing.assert_allclose(out, np.mean(singles, axis=0), atol=1e-5)
    fixed = Predictor(art, scale=2.0)
    assert fixed.scale == 2.0 and fixed.scaled_shape((64, 64)) == (128, 128)


def test_auto_scale_needs_particle_sizes_in_the_fingerprint(artifact: ModelArtifact) -> None:
    from emseg_search.inference.artifact import ArtifactError

    art = _sized(artifact, 0, 0)
    with pytest.raises(ArtifactError, match="fingerprint.json has no particle sizes"):
        Predictor(art, scale="auto")
    assert Predictor(art).scale == 1.0  # only auto needs them
