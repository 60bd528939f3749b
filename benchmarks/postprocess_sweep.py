"""What inference-time choices do to a trained model's validation IoU: flip test-time
augmentation, the probability threshold and the removal of tiny components.

    python benchmarks/postprocess_sweep.py MODEL_DIR --data DIR [--split FILE]
        [--thresholds 0.3,0.4,0.5,0.6,0.7] [--min-areas 0,16,64,256] [--threads 2]

Scores every image of the split (default: the model's own validation split, as `evaluate
--split val` picks it) at full original resolution; IoU and Dice are those of all pixels
together, as in training. Probabilities are computed once per image and TTA setting, then
thresholded and filtered, so the rows differ only in the post-processing. Choose a threshold
or a minimum area here, on validation, never on the images the model is finally judged on.
Writes benchmarks/results/postprocess_<model folder's parent>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import write_report  # noqa: E402
from skimage.morphology import remove_small_objects  # noqa: E402

from emseg_search.data import load_data  # noqa: E402
from emseg_search.inference.evaluation import select
from emseg_search.inference.predictor import Predictor  # noqa: E402


def floats(text: str) -> list[float]:
    """'0.4,0.5' -> [0.4, 0.5]."""
    return [float(v) for v in text.split(",") if v.strip()]


def drop_small(mask: np.ndarray, area: int) -> np.ndarray:
    """``mask`` without its 4-connected components of fewer than ``area`` pixels."""
    try:
        return remove_small_objects(mask, max_size=area - 1, connectivity=1)
    except TypeError:  # scikit-image < 0.26 names it min_size (removes < min_size)
        return remove_small_objects(mask, min_size=area, connectivity=1)


def main() -> None:
    """Sweep TTA x threshold x minimum component area; print and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val", help="val (the model's own), test or a FILE")
    p.add_argument("--thresholds", type=floats, default=floats("0.3,0.4,0.45,0.5,0.55,0.6,0.7"))
    p.add_argument("--min-areas", type=floats, default=floats("0,16,64,256"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(args.data)
    probe = Predictor.from_dir(args.model)
    names, described = select(data, args.split, probe.artifact.config)
    items = data.subset(names)
    keys = [(t, int(a)) for t in args.thresholds for a in args.min_areas]
    rows, base = [], None
    for tta in (False, True):
        predictor = Predictor.from_dir(args.model, tta=tta)
        inter = {k: 0 for k in keys}
        total = {k: 0 for k in keys}  # |pred| + |true|
        t0 = time.perf_counter()
        for item in items:
            proba = predictor.predict_proba(item.image)
            true = item.mask.astype(bool)
            for t, area in keys:
                mask = proba > t
                if area:
                    mask = drop_small(mask, area)
                inter[t, area] += int(np.count_nonzero(mask & true))
                total[t, area] += int(np.count_nonzero(mask)) + int(np.count_nonzero(true))
        seconds = time.perf_counter() - t0
        for t, area in keys:
            i, s = inter[t, area], total[t, area]
            iou, dice = i / (s - i), 2 * i / s
            if base is None and not tta and t == probe.threshold and area == 0:
                base = iou
            rows.append([("flips" if tta else "none"), t, area, f"{iou:.4f}", f"{dice:.4f}",
                         iou, f"{seconds:.0f} s"])  # fmt: skip
    best = max(rows, key=lambda r: r[5])
    for row in rows:
        delta = row[5] - base if base is not None else float("nan")
        row[5] = f"{delta:+.4f}" + (" **best**" if row is best else "")
    head = (
        f"{args.model} on {len(items)} images of {args.data} ({described}); baseline = no TTA, "
        f"threshold {probe.threshold}, no filtering (the training-time validation path): IoU "
        f"{base if base is not None else float('nan'):.4f}; {platform.machine()}, "
        f"{args.threads} threads"
    )
    name = f"postprocess_{args.model.absolute().parent.name}"
    write_report(
        name,
        head,
        ["TTA", "threshold", "min area (px)", "IoU", "Dice", "vs baseline", "inference time"],
        rows,
    )


if __name__ == "__main__":
    main()
