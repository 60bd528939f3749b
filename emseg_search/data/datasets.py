"""torch datasets: random training tiles and whole padded images for evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from emseg_search.data.loading import Micrograph
from emseg_search.data.readers import image_to_float01
from emseg_search.data.targets import derive_target, target_to_tensor_layout


def to_canonical(image: np.ndarray) -> np.ndarray:
    """Keep 8-bit images as uint8 (cheap to hold); map deeper ones to float32 [0, 1] once."""
    return image if image.dtype == np.uint8 else image_to_float01(image)


def scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` resized by ``scale`` (at least 1 px each)."""
    h, w = shape[:2]
    if scale == 1.0:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a canonical image by ``scale``: area averaging when shrinking, else linear."""
    if scale == 1.0:
        return image
    h, w = scaled_size(image.shape, scale)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def rescale(
    image: np.ndarray, instances: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (``rescale_image``) and its instance labels (nearest) by ``scale``."""
    if scale == 1.0:
        return image, instances
    h, w = scaled_size(image.shape, scale)
    lab = instances.astype(np.int32) if instances.dtype != np.uint16 else instances
    small = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST).astype(instances.dtype)
    return rescale_image(image, scale), small


def pad_to_input(image: np.ndarray, stride: int, min_size: int = 1) -> np.ndarray:
    """Reflect-pad an image (H, W) bottom/right to a model input size: multiples of ``stride``
    and at least ``min_size`` each way (the crop back is ``[:H, :W]``)."""
    h, w = image.shape

    def fit(n: int) -> int:
        return max(-(-n // stride) * stride, min_size)

    if (fit(h), fit(w)) == (h, w):
        return image
    return cv2.copyMakeBorder(image, 0, fit(h) - h, 0, fit(w) - w, cv2.BORDER_REFLECT_101)


def to_float01(image: np.ndarray) -> np.ndarray:
    """Canonical image -> float32 [0, 1]."""
    return image.astype(np.float32) / np.float32(255.0) if image.dtype == np.uint8 else image


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker its own augmentation stream.

    albumentations keeps its own RNG, which forked workers would otherwise all copy.
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)


def _to_uint8(target: np.ndarray) -> np.ndarray:
    """A target as uint8: class ids as they are, [0, 1] floats in steps of 1/255; instance
    ids (uint16) stay uint16."""
    if target.dtype in (np.uint8, np.uint16):
        return target
    return np.rint(np.clip(target, 0.0, 1.0) * 255.0).astype(np.uint8)


class TileDataset(Dataset):
    """Random ``tile_size`` crops for training: {"image": (1, T, T) float32, "mask": (C, T, T)}.

    Images are rescaled once by ``scale``; images smaller than a tile are padded with the mean
    intensity (mask 0). "mask" is the ``target`` (data/targets.py), derived once per image
    from its rescaled instance map: (1, T, T) 0/1 for binary, (1, T, T) class ids 0/1/2 for
    boundary, (2, T, T) mask and normalised distance (held in steps of 1/255) for distance,
    (1, T, T) instance ids for instances (held as uint16; exact in float32). ``transform``
    (albumentations) moves image and target together (the target nearest-neighbour, as any
    mask) and sees float32 images in [0, 1]; normalisation to ``(x - mean) / std`` comes last.
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
        target: str = "binary",
        boundary_width: int = 2,
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
        # every target held as uint8 (the distance in steps of 1/255): a quarter of float32
        self.masks = [_to_uint8(derive_target(p[1], target, boundary_width)) for p in pairs]
        self.scaled = target == "distance"
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

    def _target(self, stored: np.ndarray) -> np.ndarray:
        """A stored (moved) target -> (C, T, T) float32, the distance back in [0, 1]."""
        target = target_to_tensor_layout(stored)
        return target / np.float32(255.0) if self.scaled else target

    def reseed(self, seed: int) -> None:
        """Restart the augmentation stream from ``seed``."""
        self.pipeline.set_random_seed(int(seed) % 2**32)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = i % len(self.images)
        out = self.pipeline(image=to_float01(self.images[k]), mask=self.masks[k])
        image = (np.asarray(out["image"], dtype=np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(self._target(out["mask"]))),
        }


class WholeImageDataset(Dataset):
    """Whole images for evaluation, padded bottom/right to a multiple of ``stride`` and at
    least ``min_size`` (``pad_to_input``).

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
        min_size: int = 1,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.items = list(items)
        self.mean, self.std, self.stride, self.scale = float(mean), float(std), stride, scale
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, object]:
        m = self.items[i]
        image = to_float01(rescale_image(to_canonical(m.image), self.scale))
        h, w = image.shape
        padded = pad_to_input(image, self.stride, self.min_size)
        padded = (np.asarray(padded, dtype=np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(np.ascontiguousarray(padded))[None],
            "size": torch.tensor([h, w]),
            "mask": torch.from_numpy(m.mask.astype(np.float32))[None],
            "instances": torch.from_numpy(m.instances.astype(np.int64)),
            "name": m.name,
        }
