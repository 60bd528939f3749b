"""What a trained model's particle post-processing does to its particle scores: the seed
threshold of the watershed (boundary and distance targets) or Mask R-CNN's detection score and
NMS thresholds (one forward pass per pair), the smallest particle kept in px,
and the relative size filter `min_relative_area` (particles smaller than a fraction of the
image's area-weighted median particle area are dropped: the panel letters, scale-bar ticks and
specks a network marks beside a few large particles).

    python benchmarks/particles_sweep.py MODEL_DIR --data DIR \\
        --not-in configs/splits/emps_test_papers.csv \\
        [--seed-thresholds 0.3,0.5,0.7] [--min-areas 4,16,64] [--relative-areas 0,0.02,0.05,0.1]

Choose the images with --split FILE (those named) or --not-in FILE (every image except those
named: e.g. the training papers of a model held out on that file, so the settings are never
chosen on the images the model is finally judged on). The model's outputs are computed once
per image at full resolution (as `evaluate`), then post-processed every way, so rows differ
only in the post-processing. Scores as `evaluate --split-touching`: particle F1 at IoU >= 0.5
of the counts summed over images, count error (sum |predicted - true| / sum true) and the
median over images of |median-diameter error|. Writes benchmarks/results/particles_sweep_NAME.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from _report import write_report  # noqa: E402

from emseg_search.data import load_data  # noqa: E402
from emseg_search.data.layout import read_split_file  # noqa: E402
from emseg_search.inference.predictor import Predictor  # noqa: E402
from emseg_search.particles.labelling import drop_small  # noqa: E402
from emseg_search.particles.matching import (  # noqa: E402
    equivalent_diameters,
    match_instances,
    median_diameter_error,
)
from emseg_search.particles.postprocess import drop_relatively_small  # noqa: E402


def floats(text: str) -> list[float]:
    """'0.4,0.5' -> [0.4, 0.5]."""
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    """Sweep seed threshold x min area x relative area; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--split", type=Path, help="score the images this file names")
    chosen.add_argument("--not-in", type=Path, help="score every image this file does not name")
    parser.add_argument("--seed-thresholds", type=floats, default=floats("0.3,0.5,0.7"))
    parser.add_argument(
        "--score-thresholds",
        type=floats,
        default=floats("0.3,0.5"),
        help="maskrcnn: detection score thresholds (each one forward pass per NMS threshold)",
    )
    parser.add_argument(
        "--nms-thresholds",
        type=floats,
        default=floats("0.5,0.7"),
        help="maskrcnn: box IoU above which the weaker of two detections is suppressed",
    )
    parser.add_argument("--min-areas", type=floats, default=floats("4,16,64"))
    parser.add_argument("--relative-areas", type=floats, default=floats("0,0.02,0.05,0.1"))
    parser.add_argument("--limit", type=int, default=0, help="at most this many images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default=None, help="report name (default: the model's run)")
    args = parser.parse_args()

    predictor = Predictor.from_dir(args.model, threads=args.threads)
    post = predictor.post
    instances = post.target == "instances"
    if instances:  # Mask R-CNN: its detector's score and NMS thresholds, one pass per pair
        heads = predictor.model.detector.roi_heads
        default_first = (post.score_threshold, heads.nms_thresh)
        seeds = list(itertools.product(args.score_thresholds, args.nms_thresholds))
    elif post.target == "binary":
        default_first, seeds = post.seed_threshold, [post.seed_threshold]
    else:
        default_first, seeds = post.seed_threshold, args.seed_thresholds
    data = load_data(args.data)
    listed = set(read_split_file(args.split or args.not_in))
    items = [i for i in data.items if (i.name in listed) == (args.split is not None)]
    if args.limit:
        items = items[: args.limit]
    settings = list(itertools.product(seeds, args.min_areas, args.relative_areas))
    totals = {s: np.zeros(4) for s in settings}  # n_true, n_pred, tp, |count error|
    diam = {s: [] for s in settings}
    t0 = time.perf_counter()
    for k, item in enumerate(items, 1):
        if not instances:
            outputs = predictor.predict_outputs(item.image)
        true_d = equivalent_diameters(item.instances)
        for seed in seeds:
            # the model's post-processing with this seed (or score), keeping every particle:
            # the size filters below are the swept ones, not the artifact's
            if instances:
                heads.score_thresh, heads.nms_thresh = seed
                outputs = predictor.predict_outputs(item.image)
                changed = {"score_threshold": seed[0]}
            else:
                changed = {"seed_threshold": seed}
            unfiltered = replace(post, min_area=0, min_relative_area=0.0, **changed)
            base = unfiltered.instances(outputs)
            for min_area, rel in itertools.product(args.min_areas, args.relative_areas):
                labels = drop_relatively_small(drop_small(base, int(min_area)), rel)
                m = match_instances(item.instances, labels)
                totals[(seed, min_area, rel)] += [
                    m["n_true"],
                    m["n_pred"],
                    m["tp"],
                    abs(m["n_pred"] - m["n_true"]),
                ]
                e = median_diameter_error(true_d, equivalent_diameters(labels))
                if np.isfinite(e):
                    diam[(seed, min_area, rel)].append(abs(e))
        print(f"{k}/{len(items)} images, {time.perf_counter() - t0:.0f} s", flush=True)

    default = (default_first, float(post.min_area), 0.0)
    rows = []
    for s in settings:
        n_true, n_pred, tp, miscount = totals[s]
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rows.append((s, f1, p, r, miscount / max(n_true, 1), float(np.median(diam[s]))))
    best = max(rows, key=lambda row: row[1])[0]
    columns = [
        "score / NMS threshold" if instances else "seed threshold",
        "min area (px)",
        "relative area",
        "particle F1 (P / R)",
        "count error",
        "median-diameter error",
    ]
    table = []
    for s, f1, p, r, count, d in rows:
        mark = " **best F1**" if s == best else " (artifact's)" if s == default else ""
        seed = (
            f"{s[0][0]:g} / {s[0][1]:g}"
            if instances
            else f"{s[0]:g}"
            if post.target != "binary"
            else "-"
        )
        table.append(
            [
                seed,
                f"{s[1]:g}",
                f"{s[2]:g}",
                f"{f1:.3f} ({p:.3f} / {r:.3f}){mark}",
                f"{100 * count:.1f} %",
                f"{100 * d:.1f} %",
            ]
        )
    where = f"the images of {args.split}" if args.split else f"the images not in {args.not_in}"
    head = (
        f"{args.model} (target {post.target}) on {len(items)} images of {args.data} ({where}); "
        f"one forward pass per image at full resolution, then each post-processing; "
        f"{platform.machine()}, {args.threads} threads, {time.perf_counter() - t0:.0f} s."
    )
    name = args.name or args.model.resolve().parent.name
    write_report(f"particles_sweep_{name}", head, columns, table)


if __name__ == "__main__":
    main()
