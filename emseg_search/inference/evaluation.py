"""Scoring a model on labelled micrographs, image by image, at full resolution.

One row per image (``results.schemas.IMAGE_SCHEMA``): pixel confusion counts and scores, and
particles (predicted instances matched to the true ones at IoU >= 0.5) with the distance
between their size distributions. Pixel scores come from confusion counts (metrics.py), so
the data-set IoU is that of all pixels together, as in training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def select(data: Any, split: str, cfg: Any) -> tuple[list[str], str]:
    """Names to score and a description: ``all``, ``val`` (the model's own validation split
    of this data: its seed, fraction and val_file), ``test`` (test.csv) or a split FILE."""
    from emseg_search.data import resolve_split
    from emseg_search.data.errors import DataError, Problem
    from emseg_search.data.layout import read_split_file

    if split == "all":
        return list(data.names), "all images"
    if split == "val":
        chosen = resolve_split(
            data.index,
            cfg.val_fraction,
            cfg.split_seed,
            cfg.val_file,
            cfg.group_by,
            cfg.test_file,
        )
        if not chosen.val:
            raise DataError(
                data.root,
                [
                    Problem(
                        data.root,
                        "--split val: the model was trained on every image (no validation "
                        "split); score it on images it has not seen with --split FILE or test",
                    )
                ],
            )
        return list(chosen.val), f"the model's validation split ({chosen.source})"
    if split == "test":
        names = list(data.index.splits.get("test", ()))
        if not names:
            raise DataError(data.root, [Problem(data.root, "--split test: no test.csv")])
        return names, "test.csv"
    path = Path(split)
    if not path.is_file():
        raise DataError(
            data.root, [Problem(path, "--split: not all/val/test and no such split file")]
        )
    names = read_split_file(path)
    known = set(data.names)
    absent = [n for n in names if n not in known]
    if absent:
        raise DataError(
            data.root,
            [Problem(path, f"names images not in the data set: {', '.join(absent[:10])}")],
        )
    return names, str(path)


def score_image(
    predictor: Any, item: Any, split_touching: bool = False, pixel_size: float | None = None
) -> tuple[dict[str, Any], Any, Any]:
    """One row of IMAGE_SCHEMA for a labelled micrograph, its predict.Segmented, and the
    particle table of its true instances (measured once, for the row and the histogram)."""
    from emseg_search.inference.prediction import segment
    from emseg_search.metrics import COUNT_NAMES, dice, iou, per_image_counts, precision, recall
    from emseg_search.particles.matching import (
        diameter_distance,
        match_instances,
        median_diameter_error,
    )
    from emseg_search.particles.measurement import measure_particles

    t0 = time.perf_counter()
    seg = segment(predictor, item.image, item.name, split_touching, pixel_size)
    seconds = time.perf_counter() - t0
    counts = per_image_counts(torch.from_numpy(seg.mask), torch.from_numpy(item.mask))[0]
    match = match_instances(item.instances, seg.instances)
    true_particles = measure_particles(item.instances, pixel_size=pixel_size, name=item.name)
    true_d = true_particles["equivalent_diameter_px"].to_numpy()
    pred_d = seg.particles["equivalent_diameter_px"].to_numpy()
    size_px = diameter_distance(true_d, pred_d)
    row = {
        "name": item.name,
        "height": int(item.image.shape[0]),
        "width": int(item.image.shape[1]),
        **{f"{c}_px": int(v) for c, v in zip(COUNT_NAMES, counts.tolist(), strict=True)},
        "iou": float(iou(counts)),
        "dice": float(dice(counts)),
        "precision": float(precision(counts)),
        "recall": float(recall(counts)),
        "n_true": int(match["n_true"]),
        "n_pred": int(match["n_pred"]),
        "particle_tp": int(match["tp"]),
        "particle_precision": match["precision"],
        "particle_recall": match["recall"],
        "particle_f1": match["f1"],
        "mean_matched_iou": match["mean_matched_iou"],
        "panoptic_quality": match["panoptic_quality"],
        "size_wasserstein_px": size_px,
        "size_wasserstein_nm": size_px * pixel_size if pixel_size else None,
        "median_diameter_error": median_diameter_error(true_d, pred_d),
        "seconds": seconds,
        "working_scale": getattr(predictor, "last_scale", None),
    }
    return row, seg, true_particles


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Data-set scores: pixel scores of the summed counts, per-image means, particle scores of
    the summed particle counts."""
    from emseg_search.metrics import summarize as pixel_summary
    from emseg_search.particles.matching import summarize_instances

    counts = torch.tensor(
        [[r[f"{c}_px"] for c in ("tp", "fp", "fn", "tn")] for r in rows], dtype=torch.int64
    ).reshape(-1, 4)
    out = pixel_summary(counts.sum(0), counts)
    matches = [
        {
            "n_true": r["n_true"],
            "n_pred": r["n_pred"],
            "tp": r["particle_tp"],
            "sum_matched_iou": r["mean_matched_iou"] * r["particle_tp"],
        }
        for r in rows
    ]
    part = summarize_instances(matches)
    out.update({f"particle_{k}": v for k, v in part.items() if k != "sum_matched_iou"})
    out["mean_size_wasserstein_px"] = float(np.mean([r["size_wasserstein_px"] for r in rows]))
    # median over images of |relative error of the image's median diameter| (images where
    # either side has no particle are left out; NaN when that is every image)
    errors = [abs(r.get("median_diameter_error", np.nan)) for r in rows]
    errors = [e for e in errors if np.isfinite(e)]
    out["median_diameter_error"] = float(np.median(errors)) if errors else float("nan")
    out["images"] = len(rows)
    return out


@dataclass
class Evaluation:
    """What ``evaluate_images`` scored: one row per image, and both particle tables."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pred_tables: list[Any] = field(default_factory=list)
    true_tables: list[Any] = field(default_factory=list)


def evaluate_images(
    predictor: Any,
    items: Sequence[Any],
    split_touching: bool = True,
    pixel_size: float | None = None,
    masks: Path | None = None,
    overlays: Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score each labelled ``data.Micrograph``; optionally write predicted masks (0/255 PNG)
    and overlays (true and predicted outlines) into the folders ``masks`` / ``overlays``."""
    from tqdm import tqdm

    from emseg_search.inference.figures import overlay, write_png

    done = Evaluation()
    for item in tqdm(items, desc="evaluate", unit="image", disable=not progress):
        row, seg, true_particles = score_image(predictor, item, split_touching, pixel_size)
        done.rows.append(row)
        done.true_tables.append(true_particles)
        done.pred_tables.append(seg.particles)
        if masks:
            write_png(masks / f"{item.name}.png", seg.mask.astype(np.uint8) * 255)
        if overlays:
            write_png(
                overlays / f"{item.name}.png",
                overlay(item.image, seg.instances, item.instances),
            )
    return done
