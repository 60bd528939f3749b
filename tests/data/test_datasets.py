"""torch datasets: tiles with aligned augmentation and padding; whole images padded to stride."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emseg_search.data import Micrograph
from emseg_search.data.datasets import TileDataset, WholeImageDataset, rescale, seed_worker


def _stripes(h: int = 40, w: int = 56) -> Micrograph:
    """Image whose bright pixels are exactly the particle pixels (alignment is checkable)."""
    lab = np.zeros((h, w), np.uint16)
    lab[5:20, 3:9] = 1
    lab[25:35, 30:50] = 2
    img = np.where(lab > 0, 255, 0).astype(np.uint8)
    return Micrograph("s", img, lab)


def test_tiles_shape_and_alignment_under_geometric_augmentation() -> None:
    aug = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)])
    ds = TileDataset(
        [_stripes()], tile_size=32, mean=0.5, std=0.5, samples_per_epoch=20, transform=aug, seed=1
    )
    assert len(ds) == 20
    for i in range(20):
        s = ds[i]
        assert s["image"].shape == (1, 32, 32) and s["mask"].shape == (1, 32, 32)
        assert s["image"].dtype == torch.float32
        # normalised: bright (1.0) -> +1, dark (0.0) -> -1; mask must follow the image exactly
        torch.testing.assert_close(s["mask"], (s["image"] > 0).float())


def test_small_images_are_padded_with_mean_and_background() -> None:
    m = _stripes(20, 20)
    ds = TileDataset([m], tile_size=32, mean=0.25, std=0.5)
    s = ds[0]
    img, mask = s["image"][0], s["mask"][0]
    assert mask.sum() == (m.instances > 0).sum()  # the whole image is inside the tile
    assert (img == 0).sum() == 32 * 32 - 20 * 20  # padding is the mean -> 0 after normalising


def test_same_seed_same_tiles_and_workers_differ() -> None:
    big = Micrograph(
        "b",
        np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8),
        np.zeros((200, 200), np.uint16),
    )
    a = TileDataset([big], tile_size=16, mean=0.5, std=0.3, samples_per_epoch=4, seed=7)
    b = TileDataset([big], tile_size=16, mean=0.5, std=0.3, samples_per_epoch=4, seed=7)
    torch.testing.assert_close(a[0]["image"], b[0]["image"])
    loader = DataLoader(a, batch_size=1, num_workers=2, worker_init_fn=seed_worker)
    tiles = [batch["image"] for batch in loader]
    # sample 0 comes from worker 0, sample 1 from worker 1: their crops must differ
    assert not torch.equal(tiles[0], tiles[1])


def test_whole_images_pad_to_stride_and_keep_original_labels() -> None:
    m = _stripes(40, 56)
    ds = WholeImageDataset([m], mean=0.5, std=0.5, stride=32)
    s = ds[0]
    assert s["image"].shape == (1, 64, 64)
    assert s["size"].tolist() == [40, 56]
    assert s["mask"].shape == (1, 40, 56) and s["instances"].max() == 2
    torch.testing.assert_close(
        s["image"][0, :40, :56], torch.from_numpy((m.image / 255.0 - 0.5) / 0.5).float()
    )


def test_whole_images_pad_to_the_models_minimum_input() -> None:
    """PAN needs 8 x its stride: a small validation image is padded up to that, not crashed."""
    m = _stripes(40, 56)
    s = WholeImageDataset([m], mean=0.5, std=0.5, stride=32, min_size=256)[0]
    assert s["image"].shape == (1, 256, 256) and s["size"].tolist() == [40, 56]
    torch.testing.assert_close(
        s["image"][0, :40, :56], torch.from_numpy((m.image / 255.0 - 0.5) / 0.5).float()
    )


def test_scaled_evaluation_keeps_full_resolution_targets() -> None:
    m = _stripes(40, 56)
    s = WholeImageDataset([m], mean=0.5, std=0.5, stride=16, scale=0.5)[0]
    assert s["size"].tolist() == [20, 28]
    assert s["image"].shape == (1, 32, 32)
    assert s["mask"].shape == (1, 40, 56)


def test_rescale_keeps_labels_integral() -> None:
    m = _stripes()
    img, lab = rescale(m.image, m.instances, 0.5)
    assert img.shape == lab.shape == (20, 28)
    assert lab.dtype == np.uint16 and set(np.unique(lab)) <= {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tile_size": 4}, "tile_size must be >= 8"),
        ({"std": 0.0}, "std must be > 0"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    base = {"tile_size": 32, "mean": 0.5, "std": 0.5} | kwargs
    with pytest.raises(ValueError, match=message):
        TileDataset([_stripes()], **base)
