"""`python -m emseg_search.evaluate MODEL_DIR --data DIR`: score a model on labelled images.

Writes one row per image (``IMAGE_SCHEMA``) to ``--out`` (Parquet), the data-set summary to the
same path with ``.json``, and a histogram of true vs predicted particle sizes (``_sizes.png``);
optionally the predicted masks and overlays. Pixel scores are computed from confusion counts
(metrics.py), so the data-set IoU is that of all pixels together, as in training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from emseg_search.predict import add_inference_options, load_predictor

F64 = pa.float64()
IMAGE_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        # pixels, at the original resolution
        *[(f"{c}_px", pa.int64()) for c in ("tp", "fp", "fn", "tn")],
        ("iou", F64),
        ("dice", F64),
        ("precision", F64),
        ("recall", F64),
        # particles: 4-connected components of the predicted mask (watershed-split with
        # --split-touching) matched to the true instances at IoU >= 0.5 (StarDist-style)
        ("n_true", pa.int64()),
        ("n_pred", pa.int64()),
        ("particle_tp", pa.int64()),
        ("particle_precision", F64),
        ("particle_recall", F64),
        ("particle_f1", F64),
        ("mean_matched_iou", F64),
        ("panoptic_quality", F64),
        # 1-Wasserstein distance between true and predicted equivalent diameters
        ("size_wasserstein_px", F64),
        ("size_wasserstein_nm", F64),
        ("seconds", F64),
    ]
)


def select(data: Any, split: str, cfg: Any) -> tuple[list[str], str]:
    """Names to score and a description: ``all``, ``val`` (the model's own validation split
    of this data: its seed, fraction and val_file), ``test`` (test.csv) or a split FILE."""
    from emseg_search.data import resolve_split
    from emseg_search.data.errors import DataError, Problem
    from emseg_search.data.layout import read_split_file

    if split == "all":
        return list(data.names), "all images"
    if split == "val":
        chosen = resolve_split(data.index, cfg.val_fraction, cfg.split_seed, cfg.val_file)
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
    from emseg_search.metrics import (
        COUNT_NAMES,
        dice,
        iou,
        match_instances,
        per_image_counts,
        precision,
        recall,
    )
    from emseg_search.particles import diameter_distance, measure_particles
    from emseg_search.predict import segment

    t0 = time.perf_counter()
    seg = segment(predictor, item.image, item.name, split_touching, pixel_size)
    seconds = time.perf_counter() - t0
    counts = per_image_counts(torch.from_numpy(seg.mask), torch.from_numpy(item.mask))[0]
    match = match_instances(item.instances, seg.instances)
    true_particles = measure_particles(item.instances, pixel_size=pixel_size, name=item.name)
    true_d = true_particles["equivalent_diameter_px"].to_numpy()
    size_px = diameter_distance(true_d, seg.particles["equivalent_diameter_px"].to_numpy())
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
        "seconds": seconds,
    }
    return row, seg, true_particles


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Data-set scores: pixel scores of the summed counts, per-image means, particle scores of
    the summed particle counts."""
    from emseg_search.metrics import summarize as pixel_summary
    from emseg_search.metrics import summarize_instances

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
    out["images"] = len(rows)
    return out


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `evaluate`."""
    p = argparse.ArgumentParser(
        prog="emseg-search evaluate",
        description="Score a trained model on labelled micrographs at full resolution: pixel "
        "IoU/Dice/precision/recall, particle matching (F1 at IoU >= 0.5) and size error.",
    )
    p.add_argument("model", type=Path, help="model artifact folder (results/<exp>/best, .../model)")
    p.add_argument("--data", type=Path, required=True, help="labelled data folder (any layout)")
    p.add_argument(
        "--split",
        default="all",
        help="all (default), val (the model's validation split of --data), test (test.csv), "
        "or a file naming the images, one per line",
    )
    p.add_argument("--out", type=Path, help="per-image Parquet table (default: see README)")
    p.add_argument(
        "--split-touching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split touching predicted particles with a distance-transform watershed before "
        "matching them to the true instances (default on: a binary mask merges touching "
        "particles, which would count a perfect mask of packed particles as mostly wrong)",
    )
    p.add_argument("--masks", type=Path, help="also write predicted masks (0/255 PNG) here")
    p.add_argument(
        "--overlays", type=Path, help="also write overlays (true and predicted outlines)"
    )
    add_inference_options(p)
    return p


def default_out(model: Path, data: Path, split: str) -> Path:
    """results/evaluate/<experiment>-<model>-on-<data>-<split>.parquet"""
    model = model.absolute()
    tag = Path(split).stem if split not in ("all", "val", "test") else split
    return (
        Path("results/evaluate") / f"{model.parent.name}-{model.name}-on-{data.name}-{tag}.parquet"
    )


def main(argv: list[str] | None = None) -> int:
    """Evaluate; exit 0, or 2 with one message for a bad model folder, data or option."""
    from tqdm import tqdm

    from emseg_search.artifact import ArtifactError
    from emseg_search.data import DataError, load_data
    from emseg_search.figures import overlay, size_histogram, write_png
    from emseg_search.particles import concat_particles
    from emseg_search.results import write_table

    args = build_parser().parse_args(argv)
    try:
        predictor = load_predictor(args)
        data = load_data(args.data, progress=not args.quiet)
        names, described = select(data, args.split, predictor.artifact.config)
    except (ArtifactError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"error: {args.data}: no images to score in {described}", file=sys.stderr)
        return 2
    out = args.out or default_out(args.model, args.data, args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, true_tables, pred_tables = [], [], []
    items = data.subset(names)
    for item in tqdm(items, desc="evaluate", unit="image", disable=args.quiet):
        row, seg, true_particles = score_image(
            predictor, item, args.split_touching, args.pixel_size
        )
        rows.append(row)
        true_tables.append(true_particles)
        pred_tables.append(seg.particles)
        if args.masks:
            write_png(args.masks / f"{item.name}.png", seg.mask.astype(np.uint8) * 255)
        if args.overlays:
            write_png(
                args.overlays / f"{item.name}.png",
                overlay(item.image, seg.instances, item.instances),
            )
    write_table(rows, IMAGE_SCHEMA, out)
    summary = {
        "model": str(args.model.absolute()),
        "data": str(data.root),
        "split": described,
        "options": {"tta": args.tta, "split_touching": args.split_touching},
        **summarize(rows),
        "seconds": predictor.throughput.seconds,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    hist = out.with_name(f"{out.stem}_sizes.png")
    pred, true = concat_particles(pred_tables), concat_particles(true_tables)
    size_histogram(
        pred[~pred["touches_border"]],
        hist,
        true_particles=true[~true["touches_border"]],
        title=f"{len(rows)} images, {described}",
    )
    print(
        f"{len(rows)} images ({described}): IoU {summary['iou']:.4f}  Dice {summary['dice']:.4f}"
        f"  (mean per image {summary['mean_image_iou']:.4f} / {summary['mean_image_dice']:.4f})"
        f"  particle F1 {summary['particle_f1']:.4f}  precision "
        f"{summary['particle_precision']:.4f}  recall {summary['particle_recall']:.4f}"
        f"  size error {summary['mean_size_wasserstein_px']:.2f} px"
    )
    print(f"wrote {out}, {out.with_suffix('.json')}, {hist}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
