"""The report's figures (matplotlib Figure objects, no pyplot, so no global backend state):
learning curves by architecture, best-so-far against trial and compute, score distributions,
parameter importance, the Pareto front of several objectives, the comparison grid and
intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.inference.figures import overlay, save_figure, size_histogram

__all__ = [
    "arch_colors",
    "comparison_grid",
    "interval_plot",
    "importance_plot",
    "best_so_far_plot",
    "learning_curves_by_arch",
    "pareto_plot",
    "score_distribution",
    "size_histogram",
]


def _figure(width: float = 6.4, height: float = 4.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def arch_colors(archs: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per architecture (tab10 in sorted order), the same in every figure."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    return {a: palette[i % len(palette)] for i, a in enumerate(sorted(set(archs)))}


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def learning_curves_by_arch(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    out_png: str | Path,
    metric: str = "val_iou",
    rank: str = "best_val_iou",
    label: str | None = None,
) -> Path:
    """Every trial's validation curve of ``metric`` (an epochs column), coloured by
    architecture; the best trial of each architecture by ``rank`` (a trials column) drawn
    thick. ``label`` names the metric on the axis."""
    fig = _figure()
    ax = fig.subplots()
    colors = arch_colors(trials["arch"].astype(str))
    best_ids = set(
        trials.dropna(subset=[rank])
        .sort_values(rank, ascending=False)
        .drop_duplicates("arch")["trial_id"]
    )
    labelled: set[str] = set()
    for row in trials.itertuples():
        curve = epochs[epochs["trial_id"] == row.trial_id].dropna(subset=[metric])
        if curve.empty:
            continue
        curve = curve.sort_values("epoch")
        arch = str(row.arch)
        best = row.trial_id in best_ids
        ax.plot(
            curve["epoch"].to_numpy() + 1,
            curve[metric].to_numpy(np.float64),
            color=colors[arch],
            lw=2.4 if best else 0.9,
            alpha=1.0 if best else 0.45,
            marker="." if best else None,
        )
        labelled.add(arch)
    if not labelled:
        _empty(ax, "no epoch was validated")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    handles = [Line2D([], [], color=colors[a], lw=2, label=a) for a in sorted(labelled)]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    if label is None:
        label = "validation IoU" if metric == "val_iou" else metric
    ax.set_ylabel(label)
    ax.set_title("Learning curves (thick: best trial of each architecture)")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    return save_figure(fig, out_png)


def best_so_far_plot(
    curve: pd.DataFrame, out_png: str | Path, label: str = "validation IoU"
) -> Path:
    """Best score so far (``comparison.best_so_far``; ``label`` names it) against the trial
    number and against compute (hours of training + validation summed over trials)."""
    fig = _figure(9.6, 3.8)
    left, right = fig.subplots(1, 2, sharey=True)
    if curve.empty:
        _empty(left, "no trials")
    hours = curve["compute_s"].to_numpy() / 3600.0
    minutes = hours.max(initial=0.0) < 2.0
    x_compute = hours * 60.0 if minutes else hours
    for ax, x, xlabel in (
        (left, curve["trial"].to_numpy(), "trial (in start order)"),
        (right, x_compute, f"compute ({'minutes' if minutes else 'hours'} of training)"),
    ):
        ax.plot(x, curve["value"], "o", color="0.6", ms=4, label="trial's best")
        ax.step(x, curve["best"], where="post", color="tab:blue", lw=2, label="best so far")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel(label)
    left.legend(fontsize=8, loc="lower right")
    fig.suptitle("Best so far")
    return save_figure(fig, out_png)


def score_distribution(
    trials: pd.DataFrame,
    out_png: str | Path,
    metric: str = "best_val_iou",
    label: str = "validation IoU",
) -> Path:
    """Each architecture's trials' best ``metric`` (``label`` names it): a box and every
    trial as a dot."""
    fig = _figure()
    ax = fig.subplots()
    scored = trials.dropna(subset=[metric])
    archs = (
        scored.groupby("arch")[metric].max().sort_values(ascending=False).index.astype(str).tolist()
    )
    colors = arch_colors(trials["arch"].astype(str))
    if not archs:
        _empty(ax, "no scored trial")
    values = [scored[scored["arch"] == a][metric].to_numpy(np.float64) for a in archs]
    if archs:
        ax.boxplot(values, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(archs) + 1), archs)
    rng = np.random.default_rng(0)
    for i, (arch, v) in enumerate(zip(archs, values, strict=True), 1):
        ax.plot(i + rng.uniform(-0.12, 0.12, v.size), v, "o", color=colors[arch], alpha=0.7)
        ax.text(
            i,
            1.0,
            f"n={v.size}",
            ha="center",
            va="bottom",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
        )
    ax.set_ylabel(f"best {label} of a trial")
    ax.set_title("Trials' scores per architecture", pad=14)  # above the n= labels
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out_png)


def objective_label(metric: str, mode: str) -> str:
    """'val_particle_f1 (higher is better)'."""
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def pareto_plot(trials: pd.DataFrame, objectives: dict[str, str], out_png: str | Path) -> Path:
    """The completed trials on each pair of objectives (one panel for two, every pair for
    more), coloured by architecture; the Pareto-optimal ones (trials.parquet's ``pareto``)
    ringed, and with two objectives joined in order along the front."""
    from itertools import combinations

    from emseg_search.results.pareto import objective_column

    names = list(objectives)
    pairs = list(combinations(range(len(names)), 2))
    cols = min(len(pairs), 3)
    rows = -(-len(pairs) // cols)
    fig = _figure(4.6 * cols + 0.4, 4.0 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    columns = [objective_column(n) for n in names]
    done = trials[trials["status"] == "completed"].dropna(subset=columns)
    front = done["pareto"].fillna(False).astype(bool).to_numpy()
    colors = arch_colors(trials["arch"].astype(str))
    for ax, (i, j) in zip(axes, pairs, strict=False):
        xc, yc = columns[i], columns[j]
        if done.empty:
            _empty(ax, "no completed trial with every objective")
        for arch in sorted(done["arch"].astype(str).unique()):
            m = (done["arch"].astype(str) == arch).to_numpy()
            ax.scatter(done[xc][m], done[yc][m], s=22, color=colors[arch], alpha=0.75, label=arch)
        f = done[front]
        ax.scatter(
            f[xc], f[yc], s=110, facecolors="none", edgecolors="black", lw=1.4, label="Pareto"
        )
        if len(names) == 2 and len(f) > 1:
            f = f.sort_values(xc)
            ax.plot(f[xc], f[yc], color="black", lw=1, ls=":", zorder=0)
        ax.set_xlabel(objective_label(names[i], objectives[names[i]]), fontsize=8)
        ax.set_ylabel(objective_label(names[j], objectives[names[j]]), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    over = "" if len(names) == 2 else f", optimal over all {len(names)} objectives"
    fig.suptitle(
        f"Pareto front: {int(front.sum())} of {len(done)} completed trials (ringed{over})",
        fontsize=10,
    )
    return save_figure(fig, out_png)


def importance_plot(
    importances: pd.DataFrame, note: str, out_png: str | Path, label: str = "the validation IoU"
) -> Path:
    """Horizontal bars of parameter importance (largest on top), with how it was computed;
    ``label`` names the search's metric whose variance they share."""
    fig = _figure(6.4, 0.6 + 0.35 * max(len(importances), 3))
    ax = fig.subplots()
    if importances.empty:
        _empty(ax, note)
    else:
        frame = importances.sort_values("importance")
        ax.barh(frame["param"], frame["importance"], color="tab:blue")
        ax.set_xlabel(f"importance (share of the variance of {label})")
    ax.set_title("Parameter importance", fontsize=10)
    fig.text(0.01, 0.005, note, fontsize=6, color="0.35", va="bottom")
    return save_figure(fig, out_png)


def interval_plot(final: pd.DataFrame, out_png: str | Path) -> Path:
    """Each architecture's test score with its 95 % interval per metric (left), and the paired
    differences against the best architecture (right; a dashed line at 0)."""
    metrics = list(dict.fromkeys(final["metric"]))
    fig = _figure(10.0, 1.2 + 1.3 * len(metrics))
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    archs = final[final["kind"] == "architecture"]
    diffs = final[final["kind"] == "difference"]
    colors = arch_colors(archs["arch"].astype(str))
    for i, metric in enumerate(metrics):
        left, right = axes[i]
        a = archs[archs["metric"] == metric].iloc[::-1]
        y = np.arange(len(a))
        for yy, row in zip(y, a.itertuples(), strict=True):
            left.errorbar(
                row.estimate,
                yy,
                xerr=[[row.estimate - row.ci_low], [row.ci_high - row.estimate]],
                fmt="o",
                color=colors[str(row.arch)],
                capsize=4,
            )
        left.set_yticks(y, a["arch"].astype(str))
        left.set_xlabel(f"test {metric} (95 % interval over groups)")
        left.grid(alpha=0.3, axis="x")
        d = diffs[diffs["metric"] == metric].iloc[::-1]
        if d.empty:
            _empty(right, "one architecture: no difference")
            continue
        yd = np.arange(len(d))
        right.errorbar(
            d["estimate"],
            yd,
            xerr=[d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]],
            fmt="o",
            color="k",
            capsize=4,
        )
        right.axvline(0.0, color="tab:red", ls="--", lw=1)
        right.set_yticks(yd, [f"{r.arch} - {r.arch_b}" for r in d.itertuples()])
        right.set_xlabel(f"paired difference in {metric} (95 % interval)")
        right.grid(alpha=0.3, axis="x")
    fig.suptitle("Held-out test comparison")
    return save_figure(fig, out_png)


def comparison_grid(
    rows: Sequence[dict[str, Any]],
    archs: Sequence[str],
    out_png: str | Path,
    what: str = "Test images",
) -> Path:
    """N test images x (image | ground truth | each architecture's prediction).

    ``rows``: one dict per image with ``name``, ``why`` (why it was chosen), ``image`` (H, W),
    ``truth`` (instance labels) and, per architecture, ``pred[arch]`` (instance labels) and
    ``scores[arch]`` (a dict with ``iou`` and ``particle_f1``). Predicted outlines magenta,
    true outlines green.
    """
    n, cols = len(rows), 2 + len(archs)
    fig = _figure(2.6 * cols, 2.75 * max(n, 1))
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if not rows:
        _empty(axes[0][0], "no images to show")
    for i, row in enumerate(rows):
        image, truth = row["image"], row["truth"]
        width = max(1, round(max(image.shape) / 250))  # outlines that survive the downscaling
        axes[i][0].imshow(image, cmap="gray")
        why = row["why"].replace(": ", "\n", 1)
        axes[i][0].set_title(f"{row['name']}: {why}", fontsize=7)
        axes[i][1].imshow(overlay(image, np.zeros(truth.shape, bool), truth, width))
        axes[i][1].set_title(f"ground truth\n{int(truth.max())} particles", fontsize=7)
        for j, arch in enumerate(archs, 2):
            pred, s = row["pred"][arch], row["scores"][arch]
            axes[i][j].imshow(overlay(image, pred, truth, width))
            f1 = s.get("particle_f1")
            f1_text = "n/a" if f1 is None or not np.isfinite(f1) else f"{f1:.2f}"
            axes[i][j].set_title(f"{arch}\nIoU {s['iou']:.3f}, particle F1 {f1_text}", fontsize=7)
    fig.suptitle(f"{what}: green = true outlines, magenta = predicted", fontsize=8, y=0.999)
    return save_figure(fig, out_png, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
