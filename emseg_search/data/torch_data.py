"""torch datasets: random training tiles and whole padded images for evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from emseg_search.data.io import image_to_float01
from emseg_search.data.loading import Micrograph


def to_canonical(image: np.ndarray) -> np.ndarray:
    """Keep 8-bit images as uint8 (cheap to hold); map deeper ones to float32 [0, 1] once."""
    return image if image.dtype == np.uint8 else image_to_float01(image)


def rescale(
    image: np.ndarray, instances: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area/linear) and its instance labels (nearest) by ``scale``."""
    if scale == 1.0:
        return image, instances
    h, w = image.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    lab = instances.astype(np.int32) if instances.dtype != np.uint16 else instances
    small = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST).astype(instances.dtype)
    return cv2.resize(image, size, interpolation=interp), small


def _float01(image: np.ndarray) -> np.ndarray:
    """Canonical image -> float32 [0, 1]."""
    return image.astype(np.float32) / np.float32(255.0) if image.dtype == np.uint8 else image


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker its own augmentation stream.

    albumentations keeps its own RNG, which forked workers would otherwise all copy.
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)


class TileDataset(Dataset):
    """Random ``tile_size`` crops for training: {"image": (1, T, T) float32, "mask": (1, T, T)}.

    Images are rescaled once by ``scale``; images smaller than a tile are padded with the mean
    intensity (mask 0). ``transform`` (albumentations) moves image and mask together and sees
    float32 images in [0, 1]; normalisation to ``(x - mean) / std`` comes last.
    """

    def __init__(
        self,
        items: Sequence[Micrograph],
        tile_size: int,
        mean: float,
        std: float,
        samples_per_epoch: int | None = None,
        scale: float = 1.0,
        transform: A.BasicTransform | A.BaseCompose | None = None,
        seed: int = 0,
    ) -> None:
        if not items:
            raise ValueError("TileDataset needs at least one micrograph")
        if tile_size < 8:
            raise ValueError(f"tile_size must be >= 8, got {tile_size}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.tile_size = tile_size
        self.mean, self.std = float(mean), float(std)
        pairs = [rescale(to_canonical(m.image), m.instances, scale) for m in items]
        self.images = [p[0] for p in pairs]
        self.masks = [(p[1] > 0).astype(np.uint8) for p in pairs]
        self.samples_per_epoch = samples_per_epoch or len(items)
        crop = A.RandomCrop(
            tile_size,
            tile_size,
            pad_if_needed=True,
            border_mode=cv2.BORDER_CONSTANT,
            fill=self.mean,
            fill_mask=0,
        )
        self.pipeline = A.Compose(
            [crop] + ([transform] if transform is not None else []), seed=seed
        )

    def reseed(self, seed: int) -> None:
        """Restart the augmentation stream from ``seed``."""
        self.pipeline.set_random_seed(int(seed) % 2**32)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = i % len(self.images)
        out = self.pipeline(image=_float01(self.images[k]), mask=self.masks[k])
        image = (np.asarray(out["image"], dtype=np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(out["mask"]).astype(np.float32))[None],
        }


class WholeImageDataset(Dataset):
    """Whole images for evaluation, padded bottom/right to a multiple of ``stride``.

    Yields {"image": (1, Hp, Wp) normalised, at ``scale``; "size": (2,) the unpadded size at
    scale; "mask": (1, H, W) and "instances": (H, W) at the ORIGINAL resolution; "name"}, so
    predictions are cropped to "size", resized back and scored at the original size.
    Use batch_size=1: images differ in size.
    """

    def __init__(
        self,
        items: Sequence[Micrograph],
        mean: float,
        std: float,
        stride: int = 32,
        scale: float = 1.0,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.items = list(items)
        self.mean, self.std, self.stride, self.scale = float(mean), float(std), stride, scale
        self.pad = A.PadIfNeeded(
            min_height=None,
            min_width=None,
            pad_height_divisor=stride,
            pad_width_divisor=stride,
            position="top_left",
            border_mode=cv2.BORDER_REFLECT_101,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, object]:
        m = self.items[i]
        image, _ = rescale(to_canonical(m.image), m.instances, self.scale)
        h, w = image.shape
        padded = self.pad(image=_float01(image))["image"]
        padded = (np.asarray(padded, dtype=np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(np.ascontiguousarray(padded))[None],
            "size": torch.tensor([h, w]),
            "mask": torch.from_numpy(m.mask.astype(np.float32))[None],
            "instances": torch.from_numpy(m.instances.astype(np.int64)),
            "name": m.name,
        }
