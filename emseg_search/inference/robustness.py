"""The robustness benchmark: a model scored on labelled images under controlled shifts.

Each shift turns one labelled micrograph into another (albumentations transforms with fixed
parameters and a fixed seed, so every model sees the same shifted images): the scale of the
particles in pixels (image and instance map resampled together), dose (Poisson) and read
(Gaussian) noise, defocus blur, contrast and gamma, and inverted contrast (bright-field <->
dark-field). Synthetic domains are labelled image sets of their own (the generator's styles and
scenes, ``synth:<style or scene>``), scored beside them. One row per image x shift
(``results.schemas.ROBUSTNESS_SCHEMA``); per shift the pooled pixel IoU and particle F1; the
robustness score is the mean over every shift and domain except the reference ``none``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SEED = 0  # every model sees the same noise


@dataclass(frozen=True)
class Shift:
    """One controlled change of a labelled micrograph."""

    name: str
    kind: str  # reference | scale | noise | blur | intensity | polarity | domain
    description: str
    build: Callable[[int, int], Any] | None  # (H, W) -> albumentations transform; None: as is


def _resize(factor: float) -> Callable[[int, int], Any]:
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


def apply_shift(
    name: str, image: np.ndarray, instances: np.ndarray, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The shifted (uint8 image (H', W'), uint16 instances (H', W')) of one labelled image."""
    import albumentations as A

    from emseg_search.inference.figures import to_grey_uint8

    shift = SHIFTS[name]
    image = to_grey_uint8(image)  # 16-bit / float stretched as the data layer does
    instances = instances.astype(np.uint16)
    if shift.build is None:
        return image, instances
    t = A.Compose([shift.build(*image.shape)], seed=seed)
    out = t(image=image, mask=instances)
    return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])


def domain_items(name: str, n: int, size: int = 256, seed: int = 1000) -> list[Any]:
    """``n`` labelled synthetic micrographs of one domain (data.Micrograph), seeded apart from
    the embedded training set (seed 0)."""
    from emseg_search.data.loading import Micrograph
    from emseg_search.data.synth.generator import generate_sample

    style, scene = DOMAINS[name]
    tag = name.split(":", 1)[1]
    items = []
    for i in range(n):
        s = generate_sample([seed, i], size, style=style, scene=scene)
        items.append(Micrograph(f"{tag}_{i:03d}", s.image, s.instances))
    return items


@dataclass
class ShiftEvaluation:
    """What ``evaluate_shifts`` scored: ROBUSTNESS_SCHEMA rows, and per shift the first
    image as (title, image, true instances, predicted instances) for a picture."""

    rows: list[dict[str, Any]]
    examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]


def evaluate_shifts(
    predictor: Any,
    items: Sequence[Any],
    names: Sequence[str],
    split_touching: bool = True,
    domain_images: int = 16,
    progress: bool = True,
) -> ShiftEvaluation:
    """Score every image under every shift (and each synthetic domain's images)."""
    from tqdm import tqdm

    from emseg_search.inference.evaluation import score_image

    total = sum(domain_images if n in DOMAINS else len(items) for n in names)
    done = ShiftEvaluation([], [])
    bar = tqdm(total=total, desc="robustness", unit="image", disable=not progress)
    for name in names:
        group = domain_items(name, domain_images) if name in DOMAINS else _shifted(name, items)
        kind = "domain" if name in DOMAINS else SHIFTS[name].kind
        for k, item in enumerate(group):
            row, seg, _ = score_image(predictor, item, split_touching)
            done.rows.append({"shift": name, "shift_kind": kind, **row})
            if k == 0:
                scores = f"IoU {row['iou']:.3f}, particle F1 {row['particle_f1']:.2f}"
                title = f"{name}: {item.name}\n{scores}"
                done.examples.append((title, item.image, item.instances, seg.instances))
            bar.update(1)
            bar.set_postfix_str(name)
    bar.close()
    return done


def _shifted(name: str, items: Sequence[Any]) -> Any:
    from emseg_search.data.loading import Micrograph

    for item in items:
        image, inst = apply_shift(name, item.image, item.instances)
        yield Micrograph(item.name, image, inst)


def summarize_shifts(rows: Sequence[dict[str, Any]]) -> Any:
    """Per shift: images, pooled pixel IoU and Dice, particle F1 (summed matches), and the
    IoU / F1 change against ``none``; a pandas DataFrame in the order the shifts were run."""
    import pandas as pd

    from emseg_search.inference.evaluation import summarize

    frame = pd.DataFrame(list(rows))
    out = []
    for shift in dict.fromkeys(frame["shift"]):
        sub = frame[frame["shift"] == shift]
        s = summarize(sub.to_dict("records"))
        out.append(
            {
                "shift": shift,
                "kind": sub["shift_kind"].iloc[0],
                "images": int(s["images"]),
                "iou": s["iou"],
                "dice": s["dice"],
                "particle_f1": s["particle_f1"],
            }
        )
    table = pd.DataFrame(out)
    ref = table[table["shift"] == "none"]
    if len(ref):
        table["iou_change"] = table["iou"] - float(ref["iou"].iloc[0])
        table["f1_change"] = table["particle_f1"] - float(ref["particle_f1"].iloc[0])
    return table


def robustness_score(table: Any) -> dict[str, float]:
    """The benchmark's single numbers: mean IoU and mean particle F1 over every shift and
    domain except ``none`` (and the reference IoU / F1 beside them)."""
    shifted = table[table["shift"] != "none"]
    ref = table[table["shift"] == "none"]
    return {
        "robustness_iou": float(shifted["iou"].mean()) if len(shifted) else float("nan"),
        "robustness_f1": float(shifted["particle_f1"].mean()) if len(shifted) else float("nan"),
        "reference_iou": float(ref["iou"].iloc[0]) if len(ref) else float("nan"),
        "reference_f1": float(ref["particle_f1"].iloc[0]) if len(ref) else float("nan"),
        "shifts": int(len(shifted)),
    }
