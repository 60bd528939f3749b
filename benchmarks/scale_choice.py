"""Where `--scale auto` sends images whose particles measure below its band, on selection sets
that are neither the held-out papers nor the robustness benchmark's draws: the dense synthetic
scene drawn with seed 3000 (the benchmark draws with 1000, the training mix with 2000) and 60
training-paper images (random.Random(1).sample of the names outside the held-out list)
unshifted and at x0.25, x0.5, x2. Pooled pixel IoU, no TTA, `Predictor(scale="auto")` per model
and rule: `surest` (today's choice, docs/usage.md "The working scale") and `edge` (before
2026-12-07: the band's lower edge). Prints one table and writes
benchmarks/results/scale-choice[-NAME].md.

    python benchmarks/scale_choice.py results/emps_unet_robust_ft_papers_s0/model \\
        --data ../shared/data/emps-train --held-out configs/splits/emps_test_papers.csv

About 75-95 s per model and rule on a 2-core CPU (x86_64 AMD EPYC, 2026-12-07).
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import numpy as np
from _report import write_report

SETS = ("dense3000", "none", "scale_x0.25", "scale_x0.5", "scale_x2")
RULES = ("edge", "surest")


def selection_sets(data: Path, held_out: Path, images: int) -> dict:
    """Set name -> a function giving that set's labelled micrographs."""
    from emseg_search.data import load_data
    from emseg_search.data.shifts import domain_items, shifted_items
    from emseg_search.data.splits import read_names_file

    items = load_data(data).items
    test = set(read_names_file(data, held_out, "held-out", {i.name for i in items}))
    names = sorted(i.name for i in items if i.name not in test)
    pick = set(random.Random(1).sample(names, images))
    train = [i for i in items if i.name in pick]
    sets = {"dense3000": lambda: domain_items("synth:dense-small-carbon", 16, seed=3000)}
    for shift in SETS[1:]:
        sets[shift] = lambda shift=shift: shifted_items(shift, train)
    return sets


def score(model: Path, rule: str, sets: dict) -> tuple[dict[str, float], float]:
    """Pooled IoU per set for one model under one rule, and the seconds it took."""
    from emseg_search.inference.predictor import Predictor

    predictor = Predictor.from_dir(model, scale="auto")
    if rule == "edge":  # the rule before 2026-12-07, patched into this predictor only
        predictor.below_band_scales = lambda diameter, edge, shape: [edge]
    t0 = time.perf_counter()
    out = {}
    for name, make in sets.items():
        inter = union = 0
        for item in make():
            pred, true = predictor.predict_mask(item.image), item.mask
            inter += int((pred & true).sum())
            union += int((pred | true).sum())
        out[name] = inter / union
    return out, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="model artifact folders")
    p.add_argument("--data", type=Path, required=True, help="the models' training data")
    p.add_argument("--held-out", type=Path, required=True, help="names never to sample")
    p.add_argument("--images", type=int, default=60, help="training-paper images (60)")
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    p.add_argument("--name", default="", help="suffix of the results file")
    args = p.parse_args()
    sets = selection_sets(args.data, args.held_out, args.images)
    rows, means = [], {r: [] for r in args.rules}
    for model in args.models:
        for rule in args.rules:
            ious, seconds = score(model, rule, sets)
            means[rule].append([ious[s] for s in SETS])
            mean = float(np.mean(list(ious.values())))
            tag = f"{model.absolute().parent.name}/{model.name}"
            rows.append(
                [tag, rule, *(f"{ious[s]:.4f}" for s in SETS), f"{mean:.4f}", f"{seconds:.0f}"]
            )
    if len(args.models) > 1:
        for rule, values in means.items():
            m = np.mean(values, axis=0)
            rows.append(["mean", rule, *(f"{v:.4f}" for v in m), f"{m.mean():.4f}", ""])
    cpu = platform.processor() or platform.machine()
    head = (
        f"`--scale auto` below its band, selection sets (pooled IoU, no TTA; {args.images} "
        f"training-paper images of {args.data.name}), {cpu}"
    )
    columns = ["model", "rule", *SETS, "mean", "s"]
    write_report(f"scale-choice{'-' + args.name if args.name else ''}", head, columns, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
