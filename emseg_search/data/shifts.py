"""Controlled shifts of labelled micrographs: the robustness benchmark's yardsticks, and the
shifted validation images a training run may score itself on (TrialConfig.val_shifts).

Each shift turns one labelled micrograph into another (albumentations transforms with fixed
parameters and a fixed seed, so every model sees the same shifted images): the scale of the
particles in pixels (image and instance map resampled together), dose (Poisson) and read
(Gaussian) noise, defocus blur, contrast and gamma, and inverted contrast (bright-field <->
dark-field). Synthetic domains are labelled image sets of their own (the generator's styles and
scenes, ``synth:<style or scene>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg_search.data.loading import Micrograph
from emseg_search.data.readers import to_grey_uint8

SEED = 0  # every model sees the same noise


@dataclass(frozen=True)
class Shift:
    """One controlled change of a labelled micrograph."""

    name: str
    kind: str  # reference | scale | noise | blur | intensity | polarity | domain
    description: str
    build: Callable[[int, int], Any] | None  # (H, W) -> albumentations transform; None: as is


def _resize(factor: float) -> Callable[[int, int], Any]:
    # The instance map goes along by nearest neighbour; apply_shift then redraws a reduced one
    # as the image is reduced (area_labels).
    def build(h: int, w: int) -> Any:
        import albumentations as A
        import cv2

        return A.Resize(
            height=max(1, round(h * factor)),
            width=max(1, round(w * factor)),
            interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        )

    return build


def _fixed(name: str, **kwargs: Any) -> Callable[[int, int], Any]:
    def build(h: int, w: int) -> Any:
        import albumentations as A

        return getattr(A, name)(p=1.0, **kwargs)

    return build


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("none", "reference", "the image as it is", None),
        Shift("scale_x0.25", "scale", "image and mask resampled to 1/4 (particles 4x smaller)",
              _resize(0.25)),
        Shift("scale_x0.5", "scale", "image and mask resampled to 1/2", _resize(0.5)),
        Shift("scale_x2", "scale", "image and mask resampled to 2x (particles 2x larger in px)",
              _resize(2.0)),
        Shift("dose_100", "noise", "Poisson (shot) noise, ~100 counts at full intensity",
              _fixed("ShotNoise", scale_range=(0.01, 0.01))),
        Shift("dose_20", "noise", "Poisson (shot) noise, ~20 counts at full intensity",
              _fixed("ShotNoise", scale_range=(0.05, 0.05))),
        Shift("dose_5", "noise", "Poisson (shot) noise, ~5 counts at full intensity",
              _fixed("ShotNoise", scale_range=(0.2, 0.2))),
        Shift("gauss_0.1", "noise", "Gaussian read noise, std 10 % of the range",
              _fixed("GaussNoise", std_range=(0.1, 0.1))),
        Shift("defocus_3", "blur", "defocus blur, disc radius 3 px",
              _fixed("Defocus", radius=(3, 3), alias_blur=(0.1, 0.1))),
        Shift("defocus_6", "blur", "defocus blur, disc radius 6 px",
              _fixed("Defocus", radius=(6, 6), alias_blur=(0.1, 0.1))),
        Shift("contrast_0.5", "intensity", "contrast halved around the mean",
              _fixed("RandomBrightnessContrast", brightness_limit=(0.0, 0.0),
                     contrast_limit=(-0.5, -0.5))),
        Shift("gamma_0.5", "intensity", "gamma 0.5 (dark tones lifted)",
              _fixed("RandomGamma", gamma_limit=(50, 50))),
        Shift("gamma_2", "intensity", "gamma 2 (dark tones crushed)",
              _fixed("RandomGamma", gamma_limit=(200, 200))),
        Shift("invert", "polarity", "inverted contrast (bright-field <-> dark-field)",
              _fixed("InvertImg")),
    )
}  # fmt: skip

# Synthetic domains: (generator style, generator scene) per name.
DOMAINS: dict[str, tuple[str | None, str | None]] = {
    "synth:tem": ("tem", None),
    "synth:stem": ("stem", None),
    "synth:sem": ("sem", None),
    "synth:dense-small-carbon": (None, "dense-small-carbon"),
}
DEFAULT = (*SHIFTS, *DOMAINS)
# A training run that validates on a synthetic domain (TrialConfig.val_shifts) draws its own
# images of it: as many as the benchmark's per domain, seeded apart from the embedded set (0),
# the benchmark's draws (1000) and the synthetic images mixed into training (2000), so a
# search that selects on a domain neither trains on nor sees the images the benchmark scores.
VAL_DOMAIN_SEED = 3000
VAL_DOMAIN_IMAGES = 16


def resolve(names: str | Sequence[str] | None) -> list[str]:
    """Shift and domain names from ``all``/None or a comma list; ValueError names the unknown."""
    if names is None or names == "all":
        return list(DEFAULT)
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in SHIFTS and n not in DOMAINS]
    if unknown or not wanted:
        raise ValueError(
            f"unknown shift(s) {', '.join(unknown) or '(none given)'}; valid: all or a comma "
            f"list of {', '.join(DEFAULT)}"
        )
    return ["none", *[n for n in wanted if n != "none"]]  # the reference always comes first


def area_labels(instances: np.ndarray, height: int, width: int) -> np.ndarray:
    """An instance map reduced to (height, width) the way INTER_AREA reduces the image: a pixel
    is particle where particles cover at least half of its area, and belongs to the particle
    covering most of it. Nearest-neighbour reduction, which resampled the truth before
    2026-12-08, keeps one source pixel per output pixel, a quarter of an output pixel away from
    the centre of the area the image pixel averages, so even a perfect reading of the reduced
    image scored only ~0.98 IoU at x0.5 and ~0.96 at x0.25 on EMPS images (docs/robustness.md)."""
    import cv2

    size = (width, height)
    fg = cv2.resize((instances > 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    best = np.zeros((height, width), np.float32)
    out = np.zeros((height, width), np.uint16)
    for k in np.unique(instances):
        if k == 0:
            continue
        share = cv2.resize((instances == k).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        win = share > best
        best[win] = share[win]
        out[win] = k
    out[fg < 0.5] = 0
    return out


def apply_shift(
    name: str, image: np.ndarray, instances: np.ndarray, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The shifted (uint8 image (H', W'), uint16 instances (H', W')) of one labelled image."""
    import albumentations as A

    shift = SHIFTS[name]
    image = to_grey_uint8(image)  # 16-bit / float stretched as the data layer does
    instances = instances.astype(np.uint16)
    if shift.build is None:
        return image, instances
    t = A.Compose([shift.build(*image.shape)], seed=seed)
    out = t(image=image, mask=instances)
    image_out, instances_out = out["image"], out["mask"]
    if shift.kind == "scale" and image_out.size < image.size:
        instances_out = area_labels(instances, *image_out.shape[:2])
    return np.ascontiguousarray(image_out), np.ascontiguousarray(instances_out)


def domain_items(name: str, n: int, size: int = 256, seed: int = 1000) -> list[Micrograph]:
    """``n`` labelled synthetic micrographs of one domain (data.Micrograph), seeded apart from
    the embedded training set (seed 0)."""
    from emseg_search.data.synth.generator import generate_sample

    style, scene = DOMAINS[name]
    tag = name.split(":", 1)[1]
    items = []
    for i in range(n):
        s = generate_sample([seed, i], size, style=style, scene=scene)
        items.append(Micrograph(f"{tag}_{i:03d}", s.image, s.instances))
    return items


def shifted_items(name: str, items: Sequence[Micrograph]) -> Iterator[Micrograph]:
    """The micrographs under one shift (lazily, one at a time)."""
    for item in items:
        image, inst = apply_shift(name, item.image, item.instances)
        yield Micrograph(item.name, image, inst)


def check_val_shifts(names: Sequence[str]) -> None:
    """ValueError naming any entry of TrialConfig.val_shifts that is neither a shift nor a
    synthetic domain (the reference ``none`` is not: validation scores its own images)."""
    valid = [*(n for n in SHIFTS if n != "none"), *DOMAINS]
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(
            f"val_shifts: unknown shift(s) {', '.join(bad)}; valid: {', '.join(valid)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"val_shifts: a shift is named twice in {list(names)}")
