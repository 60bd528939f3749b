"""`python -m emseg_search evaluate MODEL_DIR --data DIR`: score a model on labelled images.

Writes one row per image (``results.schemas.IMAGE_SCHEMA``) to ``--out`` (Parquet), the data-set
summary to the same path with ``.json``, and a histogram of true vs predicted particle sizes
(``_sizes.png``); optionally the predicted masks and overlays (inference/evaluation.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emseg_search.atomic import write_text
from emseg_search.cli.common import UsageError, add_inference_options, command, load_predictor


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


@command
def main(argv: list[str] | None = None) -> int:
    """Evaluate; exit 0, or 2 with one message for a bad model folder, data or option."""
    from emseg_search.data import load_data
    from emseg_search.inference.evaluation import evaluate_images, select, summarize
    from emseg_search.inference.figures import size_histogram
    from emseg_search.particles.measurement import concat_particles
    from emseg_search.results.io import write_table
    from emseg_search.results.schemas import IMAGE_SCHEMA

    args = build_parser().parse_args(argv)
    predictor = load_predictor(args)
    data = load_data(args.data, progress=not args.quiet)
    names, described = select(data, args.split, predictor.artifact.config)
    if not names:
        raise UsageError(f"{args.data}: no images to score in {described}")
    out = args.out or default_out(args.model, args.data, args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = evaluate_images(
        predictor,
        data.subset(names),
        args.split_touching,
        args.pixel_size,
        masks=args.masks,
        overlays=args.overlays,
        progress=not args.quiet,
    )
    rows, true_tables, pred_tables = done.rows, done.true_tables, done.pred_tables
    write_table(rows, IMAGE_SCHEMA, out)
    summary = {
        "model": str(args.model.absolute()),
        "data": str(data.root),
        "split": described,
        "options": {"tta": args.tta, "split_touching": args.split_touching},
        **summarize(rows),
        "seconds": predictor.throughput.seconds,
    }
    write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
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
