"""Augmentation presets: 2.x argument names only, value ranges, image/mask alignment, seeding."""

from __future__ import annotations

import warnings
from collections import Counter

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from emseg_search.augment import AUGMENTATIONS, Pipeline, build_augment
from emseg_search.data import Micrograph
from emseg_search.data.datasets import TileDataset

STRENGTHS = [0.0, 0.5, 1.0, 2.0]
WARPING = ["light", "em", "heavy", "robust"]
FLIPS = (A.HorizontalFlip, A.VerticalFlip, A.RandomRotate90)


def _image_and_mask(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (64, 64) image in [0, 1] touching both ends, uint8 (64, 64) disk mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    mask = ((yy - 20) ** 2 + (xx - 24) ** 2 <= 81) | ((yy - 45) ** 2 + (xx - 40) ** 2 <= 144)
    image = np.where(mask, 0.2, 0.8) + rng.normal(0, 0.1, (64, 64))
    image[0, 0], image[0, 1] = 0.0, 1.0
    return np.clip(image, 0, 1).astype(np.float32), mask.astype(np.uint8)


def _geometric(t: A.BasicTransform | A.BaseCompose) -> bool:
    """True for transforms that move pixels (and so the mask), including OneOf of those."""
    if isinstance(t, A.BaseCompose):
        return all(_geometric(c) for c in t.transforms)
    return isinstance(t, A.DualTransform)


def _leaves(t: A.BasicTransform | A.BaseCompose) -> list[A.BasicTransform]:
    if isinstance(t, A.BaseCompose):
        return [leaf for c in t.transforms for leaf in _leaves(c)]
    return [t]


def test_registry() -> None:
    assert sorted(AUGMENTATIONS) == ["em", "flips", "heavy", "light", "none", "robust"]


def test_unknown_name_lists_sorted_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown augmentation 'strong'.*\['em', 'flips', "
        r"'heavy', 'light', 'none', 'robust'\]",
    ):
        build_augment("strong")


@pytest.mark.parametrize("strength", [-0.1, 2.5])
def test_strength_outside_range(strength: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 2.0\]"):
        build_augment("em", strength)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_strength_zero_is_none(name: str) -> None:
    # None is what TileDataset takes for "no transform": the image passes unchanged
    assert build_augment(name, 0.0) is None
    assert build_augment("none", 1.0) is None


@pytest.mark.parametrize("strength", STRENGTHS[1:])
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_presets_build_and_run_without_any_warning(name: str, strength: float) -> None:
    image, mask = _image_and_mask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 2.0.8 only warns on 1.x argument names
        aug = build_augment(name, strength)
        if aug is not None:
            for _ in range(10):
                aug(image=image, mask=mask)
    assert (aug is None) == (name == "none")
    if aug is not None:
        assert all(not leaf.invalid_args for leaf in _leaves(aug))


@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_outputs_keep_dtype_range_and_binary_mask(name: str, strength: float) -> None:
    image, mask = _image_and_mask()
    aug = build_augment(name, strength)
    pipe = A.Compose([aug] if aug is not None else [], seed=0)
    for _ in range(15):
        out = pipe(image=image, mask=mask)
        img, msk = out["image"], out["mask"]
        assert img.dtype == np.float32 and img.shape == (64, 64)
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert msk.dtype == np.uint8 and set(np.unique(msk)) <= {0, 1}
        if aug is None:
            np.testing.assert_array_equal(img, image)
            np.testing.assert_array_equal(msk, mask)


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_flips_keep_image_and_mask_exactly_aligned(strength: float) -> None:
    _, mask = _image_and_mask()
    pipe = A.Compose([build_augment("flips", strength)], seed=3)
    for _ in range(30):
        out = pipe(image=mask.astype(np.float32), mask=mask)
        np.testing.assert_array_equal(out["image"] > 0.5, out["mask"] == 1)


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", WARPING)
def test_each_warp_moves_image_and_mask_by_the_same_map(name: str, strength: float) -> None:
    """On a ramp, linear (image) and nearest (mask) sampling of ONE map differ by <= half a px."""
    leaves = [
        leaf
        for t in build_augment(name, strength).transforms
        if _geometric(t)
        for leaf in _leaves(t)
    ]
    warps = [leaf for leaf in leaves if not isinstance(leaf, FLIPS)]
    assert any(isinstance(w, A.Affine) for w in warps)
    yy, xx = np.mgrid[:64, :64]
    for warp in warps:
        warp.p = 1.0
        pipe = A.Compose([warp], seed=5)
        for ramp, steps in ((xx, 1), (yy, 1), (xx + yy, 2)):
            mask = (ramp * 2).astype(np.uint8)  # 2 grey levels per pixel along each axis
            for _ in range(10):
                out = pipe(image=mask.astype(np.float32) / 255, mask=mask)
                diff = np.abs(out["image"] * 255 - out["mask"].astype(np.float32))
                assert diff.max() <= 2 * 0.5 * steps + 1e-3, type(warp).__name__


@pytest.mark.parametrize("name", WARPING)
def test_image_equal_to_mask_stays_aligned(name: str) -> None:
    _, mask = _image_and_mask()
    geo = [t for t in build_augment(name, 1.0).transforms if _geometric(t)]
    pipe = A.Compose([Pipeline(geo)], seed=7)
    for _ in range(30):
        out = pipe(image=mask.astype(np.float32), mask=mask)
        seen = (out["image"] > 0.5).astype(np.uint8)
        m = out["mask"]
        # nearest vs linear sampling may disagree only next to a particle edge
        edge = cv2.dilate(m, np.ones((3, 3), np.uint8)) != cv2.erode(m, np.ones((3, 3), np.uint8))
        disagree = seen != m
        assert (disagree & ~edge).sum() <= 2
        assert (seen & m).sum() / max((seen | m).sum(), 1) > 0.9


@pytest.mark.parametrize("name", sorted(set(AUGMENTATIONS) - {"none"}))
def test_masks_are_resampled_nearest_and_borders_reflected(name: str) -> None:
    for leaf in _leaves(build_augment(name, 2.0)):
        if hasattr(leaf, "mask_interpolation"):
            assert leaf.mask_interpolation == cv2.INTER_NEAREST, type(leaf).__name__
        if hasattr(leaf, "border_mode"):
            assert leaf.border_mode == cv2.BORDER_REFLECT_101, type(leaf).__name__


def test_flip_decisions_are_independent_under_a_seeded_compose() -> None:
    # albumentations 2.0.8 seeds every child of a seeded Compose alike: plain Compose flips
    # both ways at once or not at all. Pipeline must give all four combinations.
    outer = A.Compose(
        [A.RandomCrop(16, 16), build_augment("flips")], seed=0, save_applied_params=True
    )
    image = np.zeros((24, 24), np.float32)
    combos = Counter()
    for _ in range(800):
        applied = {name for name, _ in outer(image=image)["applied_transforms"]}
        combos[("HorizontalFlip" in applied, "VerticalFlip" in applied)] += 1
    assert len(combos) == 4 and min(combos.values()) > 140, combos


def test_seeded_outer_compose_is_reproducible() -> None:
    image, mask = _image_and_mask()

    def run(seed: int) -> list[np.ndarray]:
        pipe = A.Compose([build_augment("heavy", 1.0)], seed=seed)
        return [pipe(image=image, mask=mask)["image"] for _ in range(5)]

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_strength_scales_the_change() -> None:
    image, mask = _image_and_mask()

    def mean_change(strength: float) -> float:
        pipe = A.Compose([build_augment("em", strength)], seed=0)
        return float(
            np.mean(
                [np.abs(pipe(image=image, mask=mask)["image"] - image).mean() for _ in range(40)]
            )
        )

    assert mean_change(0.25) < mean_change(1.0) < mean_change(2.0)


def test_tile_dataset_with_a_preset() -> None:
    lab = np.zeros((48, 48), np.uint16)
    lab[8:20, 8:20] = 1
    lab[28:44, 24:40] = 2
    m = Micrograph("t", np.where(lab > 0, 255, 0).astype(np.uint8), lab)
    kwargs = dict(tile_size=32, mean=0.5, std=0.5, samples_per_epoch=12, seed=3)
    a = TileDataset([m], transform=build_augment("flips"), **kwargs)
    b = TileDataset([m], transform=build_augment("flips"), **kwargs)
    for i in range(12):
        sa, sb = a[i], b[i]
        torch.testing.assert_close(sa["image"], sb["image"])
        torch.testing.assert_close(sa["mask"], (sa["image"] > 0).float())
    em = TileDataset([m], transform=build_augment("em", 1.0), **kwargs)
    for i in range(12):
        s = em[i]
        assert s["image"].dtype == torch.float32 and s["mask"].shape == (1, 32, 32)
        assert set(s["mask"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_scale_range_is_the_zoom_each_preset_applies(name: str, strength: float) -> None:
    """The auto working scale widens its size band by this: it must be the Affine's range."""
    from emseg_search.augment import scale_range

    pipe = build_augment(name, strength)
    zooms = [t.scale for t in (pipe.transforms if pipe else []) if isinstance(t, A.Affine)]
    lo, hi = scale_range(name, strength)
    if zooms:
        assert zooms[0]["x"] == zooms[0]["y"] == pytest.approx((lo, hi))
    else:
        assert (lo, hi) == (1.0, 1.0)
    if name == "robust" and strength == 1.0:
        assert (lo, hi) == pytest.approx((0.5, 2.0))  # the documented 0.5-2x
    with pytest.raises(ValueError, match="unknown augmentation 'strong'"):
        scale_range("strong")
