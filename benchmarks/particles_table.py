"""Particles, side by side: each model's particle scores on the same held-out images, and the
overlays of the same touching agglomerates for each model. Issue 16's table: particle F1 (IoU
>= 0.5), precision / recall, panoptic quality, count error and median-diameter error beside
pixel IoU, for binary models + watershed and instance-aware targets alike (each model's own
post-processing, as recorded in its artifact, or changed with --options).

    python benchmarks/particles_table.py \\
        binary-unet=results/emps_unet_papers/model \\
        boundary-unet=results/emps_unet_boundary_papers/model \\
        boundary-unet-pp=results/emps_unet_boundary_papers/model \\
        --options boundary-unet-pp="--seed-threshold 0.7 --min-relative-area 0.1" \\
        --data ../shared/data/emps-train --split configs/splits/emps_test_papers.csv \\
        --ood ../shared/data/ood-msa-tem --group-by metadata.csv:doi --name emps

Every model is scored with `evaluate` (full resolution, --split-touching) on --split; a model
whose tables already exist under --out is read back, not scored again (delete them to
re-score). A second table gives each model's particle F1 and pixel IoU with 95 % intervals
and its F1 minus the best model's (or --compare-to's), paired, by the project's group
bootstrap (--group-by: the groups resampled, EMPS papers). The figure shows the
--figure-images images whose ground truth has the most particles in touching groups (chosen on
the true masks only, the same for every model): green true outlines, magenta predicted ones.
Writes benchmarks/results/particles[-NAME].md and .png. About 2-4 minutes per EMPS model on a
2-core CPU for 82 images.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from _report import RESULTS, write_report

REPO = Path(__file__).resolve().parents[1]


def scored(
    model: Path,
    data: Path,
    split: str,
    out: Path,
    overlays: Path | None,
    options: list[str] = (),
) -> dict:
    """Run `evaluate` (with extra ``options``) unless its summary exists; the summary JSON."""
    summary = out.with_suffix(".json")
    if not summary.is_file():
        cmd = [sys.executable, "-m", "emseg_search", "evaluate", str(model), "--data", str(data)]
        cmd += ["--split", split, "--out", str(out), "--split-touching", "--quiet", *options]
        if overlays is not None:
            cmd += ["--overlays", str(overlays)]
        print("==", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"evaluate of {model} failed with exit code {done.returncode}")
    return json.loads(summary.read_text())


def touching_images(
    data: Path, split: str, count: int, window: int
) -> list[tuple[str, tuple[slice, slice]]]:
    """The ``count`` images of ``split`` with the most true particles in touching groups (a
    4-connected component of the true mask holding two or more instances), each with a
    ``window`` px square crop centred on the middle of its touching groups."""
    from scipy import ndimage

    from emseg_search.data import load_data
    from emseg_search.inference.evaluation import select

    loaded = load_data(data)
    names, _ = select(loaded, split, None)  # not "val": main() asks for one split for all
    wanted = set(names)
    ranked = []
    for item in loaded.items:
        if item.name not in wanted:
            continue
        groups, n = ndimage.label(item.instances > 0)
        touching, where = 0, np.zeros(groups.shape, bool)
        for g in range(1, n + 1):
            inside = groups == g
            ids = np.unique(item.instances[inside])
            if len(ids) > 1:
                touching += len(ids)
                where |= inside
        ranked.append((touching, item.name, crop(where, window)))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [(name, box) for _, name, box in ranked[:count]]


def crop(where: np.ndarray, window: int) -> tuple[slice, slice]:
    """A square of ``window`` px (clipped to the image) centred on the pixels of ``where``."""
    h, w = where.shape
    ys, xs = np.nonzero(where)
    cy, cx = (int(np.median(ys)), int(np.median(xs))) if ys.size else (h // 2, w // 2)
    side_y, side_x = min(window, h), min(window, w)
    y0 = min(max(cy - side_y // 2, 0), h - side_y)
    x0 = min(max(cx - side_x // 2, 0), w - side_x)
    return slice(y0, y0 + side_y), slice(x0, x0 + side_x)


def figure(
    models: list[str],
    folders: list[Path],
    images: list[tuple[str, tuple[slice, slice]]],
    png: Path,
) -> Path:
    """Rows: images; columns: models; each cell the model's overlay of that image's crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(
        len(images), len(models), figsize=(3.6 * len(models), 3.6 * len(images)), squeeze=False
    )
    for r, (name, box) in enumerate(images):
        for c, (model, folder) in enumerate(zip(models, folders, strict=True)):
            ax = axes[r, c]
            ax.imshow(np.asarray(Image.open(folder / f"{name}.png"))[box])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(model, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{name} [{box[0].start}:, {box[1].start}:]", fontsize=8)
    fig.suptitle("green: true particles, magenta: predicted (each model's own post-processing)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def intervals(
    frames: dict[str, pd.DataFrame], groups: dict[str, str], reference: str
) -> tuple[list[str], list[list[str]]]:
    """Each model's particle F1 and pixel IoU with 95 % intervals, and its F1 minus the
    ``reference`` model's (paired), all by the project's own group bootstrap
    (emseg_search.analysis.intervals: resampling groups -- EMPS papers --, not images)."""
    from emseg_search.analysis.intervals import architecture_interval, paired_difference

    def ci(d: dict) -> str:
        return f"{d['estimate']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"

    tables = {
        label: frame.assign(group=frame["name"].map(groups), seed=0)
        for label, frame in frames.items()
    }
    rows = []
    for label, frame in tables.items():
        row = [label, ci(architecture_interval(frame, "particle_f1"))]
        row.append(ci(architecture_interval(frame, "iou")))
        if label == reference:
            row += ["(reference)", "", ""]
        else:
            d = paired_difference(frame, tables[reference], "particle_f1")
            row += [f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"]
            row += [f"{d['prob_superiority']:.2f}", f"{d['wilcoxon_p']:.3g}"]
        rows.append(row)
    columns = [
        "model",
        "particle F1 [95 % CI]",
        "pixel IoU [95 % CI]",
        f"F1 minus {reference} [95 % CI]",
        "P(better on an image)",
        "Wilcoxon p (per group)",
    ]
    return columns, rows


def training_minutes(model: Path) -> str:
    """Summed epoch + validation seconds of the run that wrote ``model``, in minutes."""
    epochs = model.parent / "epochs.parquet"
    if not epochs.is_file():
        return "?"
    table = pd.read_parquet(epochs)
    seconds = table["epoch_seconds"].fillna(0).sum() + table["val_seconds"].fillna(0).sum()
    return f"{seconds / 60:.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="LABEL=artifact folder, e.g. unet=results/x/model")
    p.add_argument("--data", type=Path, required=True, help="labelled data the split names")
    p.add_argument(
        "--split",
        required=True,
        help="images every model is scored on: a split file (one name per line), test or all",
    )
    p.add_argument("--ood", type=Path, help="a labelled folder from elsewhere (never trained on)")
    p.add_argument(
        "--options",
        action="append",
        default=[],
        metavar='LABEL="OPTIONS"',
        help="extra evaluate options for one model, e.g. "
        'boundary-unet-pp="--seed-threshold 0.7 --min-relative-area 0.1" (repeatable)',
    )
    p.add_argument("--figure-images", type=int, default=4, help="images in the figure (4)")
    p.add_argument(
        "--figure-models",
        default="",
        help="comma list of the labels drawn in the figure (default: every model)",
    )
    p.add_argument(
        "--group-by",
        default="",
        help="CSV:COLUMN or regex:PATTERN (as `train --group-by`): the groups the intervals "
        "resample (EMPS: metadata.csv:doi, the paper); default: each image its own group",
    )
    p.add_argument(
        "--compare-to",
        default="",
        help="the label every model's particle F1 is compared with, paired (default: the "
        "model with the highest particle F1)",
    )
    p.add_argument("--window", type=int, default=320, help="crop of each image, px (320)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "particles")
    p.add_argument("--name", default="", help="suffix of the results files")
    args = p.parse_args()
    if args.split == "val":
        raise SystemExit("error: --split val differs per model; name a split file, test or all")
    labels, paths = [], []
    for spec in args.models:
        label, sep, path = spec.partition("=")
        if not sep or not label or not Path(path, "artifact.json").is_file():
            raise SystemExit(f"error: {spec!r}: expected LABEL=<model artifact folder>")
        labels.append(label)
        paths.append(Path(path))
    options: dict[str, list[str]] = {}
    for spec in args.options:
        label, sep, text = spec.partition("=")
        if not sep or label not in labels:
            raise SystemExit(f'error: --options {spec!r}: expected LABEL="OPTIONS" of a model')
        options[label] = shlex.split(text)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare_to and args.compare_to not in labels:
        raise SystemExit(f"error: --compare-to {args.compare_to!r} names no model")
    rows, folders, frames, f1s = [], [], {}, {}
    for label, model in zip(labels, paths, strict=True):
        overlays = args.out / f"{label}_overlays"
        extra = options.get(label, [])
        s = scored(model, args.data, args.split, args.out / f"{label}.parquet", overlays, extra)
        frames[label] = pd.read_parquet(args.out / f"{label}.parquet")
        f1s[label] = s["particle_f1"]
        folders.append(overlays)
        target = json.loads((model / "artifact.json").read_text()).get("target", "binary")
        row = [
            label,
            " ".join([target, *extra]),
            f"{s['iou']:.4f}",
            f"**{s['particle_f1']:.3f}** ({s['particle_precision']:.3f} / "
            f"{s['particle_recall']:.3f})",
            f"{s['particle_panoptic_quality']:.3f}",
            f"{100 * s['particle_count_error']:.1f} %",
            f"{100 * s.get('median_diameter_error', float('nan')):.1f} %",
        ]
        if args.ood:
            o = scored(model, args.ood, "all", args.out / f"{label}_ood.parquet", None, extra)
            row.append(f"{o['iou']:.4f} / {o['particle_f1']:.3f}")
        row.append(training_minutes(model))
        rows.append(row)
    columns = [
        "model",
        "target (and evaluate options)",
        "pixel IoU",
        "particle F1 (P / R)",
        "PQ",
        "count error",
        "median-diameter error",
        *(["ood IoU / F1"] if args.ood else []),
        "training min (as run)",
    ]
    suffix = f"-{args.name}" if args.name else ""
    images = touching_images(args.data, args.split, args.figure_images, args.window)
    drawn = [x for x in args.figure_models.split(",") if x] or labels
    unknown = sorted(set(drawn) - set(labels))
    if unknown:
        raise SystemExit(f"error: --figure-models names no model: {', '.join(unknown)}")
    chosen = [folders[labels.index(x)] for x in drawn]
    png = figure(drawn, chosen, images, RESULTS / f"particles{suffix}.png")
    names = [name for name, _ in images]
    head = (
        f"Particles on `{args.split}` of {args.data.name} ({s['images']} images; evaluate "
        f"--split-touching at full resolution), {platform.machine()}. Count error: sum over "
        "images of |predicted - true count| / true count; median-diameter error: median over "
        "images of |median predicted - median true equivalent diameter| / median true. "
        f"Figure: {png.name}, {args.window} px crops of images {', '.join(names)} (most true "
        "particles in touching groups; crops centred on them)."
    )
    names_all = sorted({n for f in frames.values() for n in f["name"]})
    if args.group_by:
        from emseg_search.data.splits import read_groups

        groups = read_groups(args.data, names_all, args.group_by)
        unit = f"groups of {args.group_by}"
    else:
        groups, unit = {n: n for n in names_all}, "images (no --group-by)"
    reference = args.compare_to or max(f1s, key=f1s.get)
    icolumns, irows = intervals(frames, groups, reference)
    ihead = (
        f"Intervals ({len(set(groups.values()))} {unit}; one training run per model, so they "
        "cover the choice of images, not of training seeds): "
        "emseg_search.analysis.intervals, paired group bootstrap (9,999 resamples, BCa 95 %); "
        "P(better on an image): share of images where the model's F1 is higher than the "
        "reference's, ties 1/2; Wilcoxon signed-rank over the groups' mean per-image differences."
    )
    write_report(f"particles{suffix}", head, columns, rows, (ihead, icolumns, irows))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
