"""Named augmentation presets for EM tiles -> albumentations.Compose, scaled by ``strength``.

Inputs are float32 grey images (H, W) in [0, 1] with uint8 binary masks (H, W); geometric
transforms move both (masks with nearest-neighbour interpolation, borders reflected so no
artificial edges appear), intensity transforms touch the image only and keep it in [0, 1].

``strength`` (TrialConfig.augment_strength, 0..2) scales magnitudes linearly and
probabilities up to a cap; 1 is the tuned default and 0 means no augmentation at all.
Symmetries of EM data (flips, 90-degree turns) have no magnitude: their probability reaches
its most random value (0.5 per flip) at strength 1 and stays there.

Only albumentations 2.x argument names are used: 2.0.8 drops unknown (1.x) names with a mere
warning, so tests build every preset with warnings turned into errors.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np

Transforms = list[A.BasicTransform | A.BaseCompose]
Builder = Callable[[float], Transforms]

MAX_STRENGTH = 2.0
_REFLECT = cv2.BORDER_REFLECT_101
_SALT = 0xE5E6  # keeps this stream apart from sibling transforms seeded with the same seed


class Pipeline(A.Compose):
    """A Compose whose transforms draw from ONE random stream derived from the seed.

    albumentations 2.0.8 gives every child of a seeded Compose its own generator with the
    SAME seed, so e.g. HorizontalFlip and VerticalFlip (p=0.5) always fire together.
    """

    def set_random_seed(self, seed: int | None) -> None:
        """Seed one numpy and one Python generator (from ``seed`` plus a salt) for all children."""
        self.seed = seed
        entropy = None if seed is None else [int(seed), _SALT]
        np_seq, py_seq = np.random.SeedSequence(entropy).spawn(2)
        py_seed = int(py_seq.generate_state(2, np.uint64)[0])
        self.set_random_state(np.random.default_rng(np_seq), random.Random(py_seed))


def _p(base: float, s: float, cap: float = 0.9) -> float:
    """Probability ``base`` at strength 1, linear in strength, capped."""
    return min(cap, base * s)


def _none(s: float) -> Transforms:
    """No transform at any strength."""
    return []


def _flips(s: float) -> Transforms:
    """Dihedral symmetries: uniform over all 8 at strength >= 1."""
    p = 0.5 * min(s, 1.0)
    return [A.HorizontalFlip(p=p), A.VerticalFlip(p=p), A.RandomRotate90(p=min(s, 1.0))]


def _light_scale(s: float) -> tuple[float, float]:
    """The light preset's zoom range."""
    return 1 - 0.1 * s, 1 + 0.1 * s


def _em_scale(s: float) -> tuple[float, float]:
    """The EM stack's zoom range (em; heavy at 1.5x strength)."""
    return 1 - min(0.3, 0.15 * s), 1 + min(0.3, 0.15 * s)


def _robust_scale(s: float) -> tuple[float, float]:
    """The robust preset's zoom range: 0.5-2x at strength 1, symmetric in log scale."""
    return 1 / (1 + s), 1 + s


def _light(s: float) -> Transforms:
    """Flips, mild scale/rotation, mild brightness/contrast."""
    return [
        *_flips(s),
        A.Affine(
            scale=_light_scale(s),
            rotate=(-15 * s, 15 * s),
            border_mode=_REFLECT,
            p=_p(0.5, s),
        ),
        A.RandomBrightnessContrast(brightness_limit=0.1 * s, contrast_limit=0.1 * s, p=_p(0.5, s)),
    ]


def _em_stack(s: float, warp: Transforms) -> Transforms:
    """EM imaging: geometry, then contrast/gamma/CLAHE, defocus-like blur, detector noise."""
    return [
        *_flips(s),
        A.Affine(
            scale=_em_scale(s),
            rotate=(-min(180.0, 45 * s), min(180.0, 45 * s)),
            border_mode=_REFLECT,
            p=_p(0.5, s),
        ),
        *warp,
        A.RandomBrightnessContrast(
            brightness_limit=min(0.4, 0.15 * s), contrast_limit=min(0.4, 0.15 * s), p=_p(0.5, s)
        ),
        A.RandomGamma(gamma_limit=(max(40.0, 100 - 20 * s), 100 + 20 * s), p=_p(0.3, s)),
        A.CLAHE(clip_limit=(1.0, 1.0 + 1.5 * s), tile_grid_size=(8, 8), p=_p(0.15, s)),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, 0.3 + 0.7 * s)),
                A.Defocus(radius=(1, max(1, round(1 + s))), alias_blur=(0.1, 0.3)),
            ],
            p=_p(0.25, s),
        ),
        A.OneOf(
            [
                A.GaussNoise(std_range=(0.01 * s, min(0.12, 0.04 * s))),
                A.ShotNoise(scale_range=(0.002 * s, min(0.03, 0.01 * s))),  # Poisson counts
            ],
            p=_p(0.4, s),
        ),
    ]


def _em(s: float) -> Transforms:
    """EM-specific stack with a mild elastic warp (displacements of ~1-2 px at strength 1)."""
    elastic = A.ElasticTransform(alpha=60 * s, sigma=8, border_mode=_REFLECT, p=_p(0.2, s))
    return _em_stack(s, [elastic])


def _heavy(s: float) -> Transforms:
    """The EM stack at 1.5x strength plus a strong elastic or grid distortion."""
    warp = A.OneOf(
        [
            A.ElasticTransform(alpha=200 * s, sigma=10, border_mode=_REFLECT),
            A.GridDistortion(num_steps=5, distort_limit=(-0.1 * s, 0.1 * s), border_mode=_REFLECT),
        ],
        p=_p(0.4, s),
    )
    return _em_stack(1.5 * s, [warp])


def _robust(s: float) -> Transforms:
    """For micrographs from other microscopes: the EM stack plus particle scale over 0.5-2x
    (users' particles span 12-150 px), dose noise down to ~5 counts, defocus up to radius 5,
    contrast halved, gamma 0.5-2 and inverted contrast (bright- and dark-field)."""
    return [
        *_flips(s),
        A.Affine(
            scale=_robust_scale(s),
            rotate=(-min(180.0, 45 * s), min(180.0, 45 * s)),
            border_mode=_REFLECT,
            p=_p(0.6, s),
        ),
        A.RandomBrightnessContrast(
            brightness_limit=min(0.4, 0.2 * s),
            contrast_limit=(-min(0.6, 0.5 * s), 0.2 * s),
            p=_p(0.5, s),
        ),
        A.RandomGamma(gamma_limit=(100 / (1 + s), 100 * (1 + s)), p=_p(0.3, s)),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, 0.3 + 1.5 * s)),
                A.Defocus(radius=(1, max(1, round(1 + 4 * s))), alias_blur=(0.1, 0.3)),
            ],
            p=_p(0.3, s),
        ),
        A.OneOf(
            [
                A.GaussNoise(std_range=(0.01 * s, min(0.15, 0.1 * s))),
                A.ShotNoise(scale_range=(0.005 * s, min(0.3, 0.2 * s))),  # ~5-200 counts
            ],
            p=_p(0.5, s),
        ),
        A.InvertImg(p=_p(0.3, s, cap=0.5)),
    ]


AUGMENTATIONS: dict[str, Builder] = {
    "none": _none,
    "flips": _flips,
    "light": _light,
    "em": _em,
    "heavy": _heavy,
    "robust": _robust,
}


# How much each preset zooms (particles seen at lo-hi times their size), by strength.
SCALE_RANGES: dict[str, Callable[[float], tuple[float, float]]] = {
    "light": _light_scale,
    "em": _em_scale,
    "heavy": lambda s: _em_scale(1.5 * s),
    "robust": _robust_scale,
}


def scale_range(name: str, strength: float = 1.0) -> tuple[float, float]:
    """(lo, hi): the factors by which preset ``name`` at ``strength`` zooms training tiles,
    so the particle sizes a model trained with it has seen; (1, 1) without zoom."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid names: {sorted(AUGMENTATIONS)}")
    if name not in SCALE_RANGES or strength <= 0:
        return 1.0, 1.0
    return SCALE_RANGES[name](float(strength))


def build_augment(name: str, strength: float = 1.0) -> A.Compose | None:
    """Preset ``name`` at ``strength`` (0..2) for float32 (H, W) images + uint8 (H, W) masks.

    Returns None (no augmentation) for "none" and for strength 0.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid names: {sorted(AUGMENTATIONS)}")
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"augment strength must lie in [0, {MAX_STRENGTH}], got {strength}")
    transforms = AUGMENTATIONS[name](float(strength)) if strength > 0 else []
    return Pipeline(transforms) if transforms else None
