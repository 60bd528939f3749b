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
from emseg_search.cli.common import (
    UsageError,
    add_inference_options,
    command,
    inference_options,
    load_predictor,
)


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
    p.add_argument(
        "--max-images",
        type=int,
        help="score a seeded random sample of this many of the chosen images (seed 0); the "
        "summary says so",
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
    p.add_argument(
        "--shifts",
        nargs="?",
        const="all",
        metavar="LIST",
        help="the robustness benchmark: score the images under controlled shifts (scale, dose "
        "and read noise, defocus, contrast, gamma, inverted contrast) and on synthetic domains; "
        "'all' (the default when given without a value) or a comma list, e.g. "
        "scale_x0.5,scale_x2,synth:dense-small-carbon (docs/usage.md lists them)",
    )
    p.add_argument(
        "--domain-images",
        type=int,
        default=16,
        help="with --shifts: images per synthetic domain (16)",
    )
    add_inference_options(p)
    return p


def default_out(model: Path, data: Path, split: str, suffix: str = "") -> Path:
    """results/evaluate/<experiment>-<model>-on-<data>-<split><suffix>.parquet"""
    model = model.absolute()
    tag = Path(split).stem if split not in ("all", "val", "test") else split
    name = f"{model.parent.name}-{model.name}-on-{data.name}-{tag}{suffix}.parquet"
    return Path("results/evaluate") / name


def scale_suffix(args: argparse.Namespace) -> str:
    """What sets a default output apart when the model ran at another scale: '-scale-auto',
    '-scale-0.5', '-scaletta-0.71,1,1.41' (empty at the model's own)."""
    parts = []
    if args.scale is not None:
        parts.append(f"-scale-{args.scale}")
    if args.scale_tta is not None:
        parts.append(f"-scaletta-{args.scale_tta}")
    return "".join(parts)


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
    shifts = _check_options(args)
    predictor = load_predictor(args)
    data = load_data(args.data, progress=not args.quiet)
    names, described = select(data, args.split, predictor.artifact.config)
    if not names:
        raise UsageError(f"{args.data}: no images to score in {described}")
    if args.max_images is not None and args.max_images < len(names):
        import random

        names = sorted(random.Random(0).sample(sorted(names), args.max_images))
        described = f"{args.max_images} images sampled (seed 0) from {described}"
    if shifts:
        return run_shifts(args, predictor, data.subset(names), described, shifts)
    out = args.out or default_out(args.model, args.data, args.split, scale_suffix(args))
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
        "options": {**inference_options(args), "split_touching": args.split_touching},
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
        f"  PQ {summary['particle_panoptic_quality']:.4f}"
        f"  count error {100 * summary['particle_count_error']:.1f} %"
        f"  size error {summary['mean_size_wasserstein_px']:.2f} px"
        f"  median-diameter error {100 * summary['median_diameter_error']:.1f} %"
    )
    print(f"wrote {out}, {out.with_suffix('.json')}, {hist}")
    return 0


def _check_options(args: argparse.Namespace) -> list[str]:
    """The shifts asked for (none without --shifts); UsageError for a bad option before
    anything is loaded."""
    from emseg_search.data.shifts import resolve

    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images must be >= 1, got {args.max_images}")
    if args.shifts is None:
        return []
    if args.masks or args.overlays:
        raise UsageError("--shifts writes its own pictures; drop --masks / --overlays")
    if args.domain_images < 1:
        raise UsageError(f"--domain-images must be >= 1, got {args.domain_images}")
    try:
        return resolve(args.shifts)
    except ValueError as e:
        raise UsageError(f"--shifts: {e}") from None


def run_shifts(
    args: argparse.Namespace, predictor: object, items: tuple, described: str, shifts: list[str]
) -> int:
    """The robustness benchmark: rows, summary JSON, a chart and example panels."""
    from emseg_search.analysis.intervals import shift_change_intervals
    from emseg_search.data.shifts import SHIFTS
    from emseg_search.inference.figures import example_grid, robustness_chart
    from emseg_search.inference.robustness import evaluate_shifts, robustness_score
    from emseg_search.results.io import write_table
    from emseg_search.results.schemas import ROBUSTNESS_SCHEMA

    out = args.out or default_out(
        args.model, args.data, args.split, f"{scale_suffix(args)}-robustness"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    done = evaluate_shifts(
        predictor,
        items,
        shifts,
        args.split_touching,
        domain_images=args.domain_images,
        progress=not args.quiet,
    )
    write_table(done.rows, ROBUSTNESS_SCHEMA, out)
    table = shift_change_intervals(done.rows)
    score = robustness_score(table)
    summary = {
        "model": str(args.model.absolute()),
        "data": str(args.data.resolve()),
        "split": described,
        "options": {**inference_options(args), "split_touching": args.split_touching},
        **score,
        "per_shift": table.to_dict("records"),
        "descriptions": {n: SHIFTS[n].description for n in shifts if n in SHIFTS},
    }
    write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    chart = robustness_chart(
        table,
        out.with_name(f"{out.stem}_chart.png"),
        f"{args.model.absolute().parent.name}/{args.model.name} on {len(items)} images "
        f"({described}); robustness IoU {score['robustness_iou']:.3f}",
    )
    grid = example_grid(done.examples, out.with_name(f"{out.stem}_examples.png"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"robustness (mean over {score['shifts']} shifts and domains): IoU "
        f"{score['robustness_iou']:.4f}, particle F1 {score['robustness_f1']:.4f} "
        f"(unshifted: {score['reference_iou']:.4f} / {score['reference_f1']:.4f})"
    )
    print(f"wrote {out}, {out.with_suffix('.json')}, {chart}, {grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
