"""Pictures of particles: outlines over micrographs, size histograms (matplotlib, no pyplot).

Used by `predict` and `evaluate`; the comparative report builds on the same pieces.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.atomic import atomic_path
from emseg_search.data.readers import to_grey_uint8

PRED_COLOR = (255, 0, 255)  # magenta: predicted outlines
TRUE_COLOR = (0, 255, 0)  # green: ground-truth outlines


def overlay(
    image: np.ndarray,
    labels_or_mask: np.ndarray,
    true_labels: np.ndarray | None = None,
    width: int = 1,
) -> np.ndarray:
    """Micrograph (H, W) with particle outlines -> uint8 RGB (H, W, 3).

    Predicted particles (a label map, or a bool mask) are outlined in ``PRED_COLOR`` on
    their inner boundary pixels, touching particles included; ground-truth particles in
    ``TRUE_COLOR`` on their outer boundary pixels, so both stay visible where they agree.
    ``width`` > 1 thickens the outlines (for pictures shown smaller than the image).
    """
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    grey = to_grey_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    maps = [(labels_or_mask, "inner", PRED_COLOR, "labels_or_mask")]
    if true_labels is not None:
        maps.insert(0, (true_labels, "outer", TRUE_COLOR, "true_labels"))
    for lab, mode, color, what in maps:
        lab = np.asarray(lab)
        if lab.shape != grey.shape:
            raise ValueError(f"`{what}` shape {lab.shape} differs from image {grey.shape}")
        edges = find_boundaries(lab, mode=mode)
        if width > 1:
            edges = dilation(edges, disk(width // 2))
        rgb[edges] = color
    return rgb


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as PNG, atomically (parent folders made)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, np.uint8)).save(tmp, format="PNG")
    return Path(path)


def size_summary(diameters: np.ndarray) -> dict[str, float]:
    """count, mean, median, std (ddof=1) of a sample of diameters; NaN stats when too few."""
    d = np.asarray(diameters, np.float64)
    n = d.size
    return {
        "count": n,
        "mean": float(d.mean()) if n else float("nan"),
        "median": float(np.median(d)) if n else float("nan"),
        "std": float(d.std(ddof=1)) if n > 1 else float("nan"),
    }


def _diameter_column(particles: pd.DataFrame) -> tuple[str, str]:
    """nm when every particle has one, else px."""
    nm = particles["equivalent_diameter_nm"]
    return (
        ("equivalent_diameter_nm", "nm") if nm.notna().all() else ("equivalent_diameter_px", "px")
    )


def _label(who: str, d: np.ndarray, unit: str) -> str:
    s = size_summary(d)
    return (
        f"{who}: n={s['count']}, mean={s['mean']:.1f}, median={s['median']:.1f}, "
        f"std={s['std']:.1f} {unit}"
    )


def size_histogram(
    particles: pd.DataFrame,
    out_png: str | Path,
    true_particles: pd.DataFrame | None = None,
    title: str = "Particle sizes",
    bins: int | str = "auto",
) -> Path:
    """Histogram of equivalent diameters of a particle table (and a true one) -> PNG.

    nm when every row of both tables has a pixel size, else px. The legend gives count,
    mean, median and std. Filter ``touches_border`` rows first for unbiased sizes.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    tables = [particles] + ([] if true_particles is None else [true_particles])
    col, unit = _diameter_column(pd.concat([t[["equivalent_diameter_nm"]] for t in tables]))
    pred = particles[col].to_numpy(np.float64)
    true = None if true_particles is None else true_particles[col].to_numpy(np.float64)
    both = pred if true is None else np.concatenate([pred, true])
    edges = np.histogram_bin_edges(both, bins=bins) if both.size else np.linspace(0, 1, 2)
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.subplots()
    who = "particles" if true is None else "predicted"
    ax.hist(pred, bins=edges, color="tab:purple", alpha=0.7, label=_label(who, pred, unit))
    if true is not None:
        label = _label("true", true, unit)
        ax.hist(true, bins=edges, histtype="step", lw=2, color="tab:green", label=label)
    if not both.size:
        ax.text(0.5, 0.5, "no particles", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, out_png)


def save_figure(
    fig: Any,
    out_png: str | Path,
    rect: tuple[float, float, float, float] | None = None,
    crop: bool = False,
) -> Path:
    """Lay out a matplotlib Figure (within ``rect``, figure fractions) and write it as PNG,
    atomically (parent folders made); ``crop`` trims the page to what is drawn on it."""
    fig.tight_layout(rect=rect)
    with atomic_path(out_png) as tmp:
        if crop:
            fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.05)
        else:
            fig.savefig(tmp, format="png")
    return Path(out_png)


def learning_curves(
    runs: dict[str, pd.DataFrame],
    out_png: str | Path,
    metric: str = "val_iou",
    title: str = "Validation IoU per epoch",
) -> Path:
    """One line per run (label -> its epochs table: ``epoch`` and ``metric`` columns, as
    in epochs.parquet) -> PNG. Each run's best value is marked and given in the legend;
    epochs that were not validated (NaN) are skipped."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.subplots()
    if len(runs) > 10:  # the default cycle has 10 colours: a search's trials would share them
        ax.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)
    for label, epochs in runs.items():
        done = epochs.dropna(subset=[metric]).sort_values("epoch")
        if done.empty:
            continue
        x, y = done["epoch"].to_numpy() + 1, done[metric].to_numpy(np.float64)
        (line,) = ax.plot(x, y, marker=".", label=f"{label} (best {y.max():.4f})")
        ax.plot(x[y.argmax()], y.max(), "o", mfc="none", ms=9, color=line.get_color())
    ax.set_xlabel("epoch")
    names = {"val_iou": "validation IoU", "val_dice": "validation Dice"}
    ax.set_ylabel(names.get(metric, metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, out_png)


def robustness_chart(table: pd.DataFrame, out_png: str | Path, title: str) -> Path:
    """Pixel IoU and particle F1 per shift (``inference.robustness.summarize_shifts``) as
    horizontal bars, the unshifted reference as dashed lines -> PNG."""
    from matplotlib.figure import Figure

    n = len(table)
    fig = Figure(figsize=(9.0, 1.2 + 0.32 * n), dpi=120)
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)[::-1]
    colors = {"reference": "0.4", "scale": "tab:blue", "noise": "tab:orange", "blur": "tab:green",
              "intensity": "tab:purple", "polarity": "tab:red", "domain": "tab:brown"}  # fmt: skip
    c = [colors.get(k, "tab:gray") for k in table["kind"]]
    for ax, metric, label in zip(
        axes, ("iou", "particle_f1"), ("pixel IoU", "particle F1 (IoU >= 0.5)"), strict=True
    ):
        values = table[metric].to_numpy(np.float64)
        ax.barh(y, values, color=c)
        for yi, v in zip(y, values, strict=True):
            ax.text(min(v, 1.0) + 0.01, yi, f"{v:.3f}", va="center", fontsize=7)
        ref = table.loc[table["shift"] == "none", metric]
        if len(ref):
            ax.axvline(float(ref.iloc[0]), color="0.3", ls="--", lw=1)
        ax.set_xlim(0, 1.12)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, table["shift"])
    lines = textwrap.wrap(title, 95)  # a long data description would run off the figure
    fig.suptitle("\n".join(lines), fontsize=10)
    return save_figure(fig, out_png)  # tight_layout leaves room for the suptitle itself


def example_grid(
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    out_png: str | Path,
    columns: int = 6,
    panel_px: int = 256,
) -> Path:
    """(title, image (H, W), true instances, predicted instances) per panel, drawn as
    outline overlays (green true, magenta predicted) in a grid -> PNG."""
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(panels)))  # two panels: a two-panel figure
    rows = max(1, -(-len(panels) // columns))
    titles = [
        "\n".join(w for line in t.splitlines() for w in textwrap.wrap(line, 48) or [""])
        for t, *_ in panels
    ]  # long names wrap within their panel
    size = panel_px / 100
    title_in = 0.06 + 0.12 * max((t.count("\n") + 1 for t in titles), default=1)
    fig = Figure(figsize=(columns * size, rows * (size + title_in)), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, title, (_, image, true, pred) in zip(axes, titles, panels, strict=False):
        width = max(1, round(max(image.shape) / panel_px))
        ax.imshow(overlay(image, pred, true, width=width), interpolation="antialiased")
        ax.set_title(title, fontsize=7)
    return save_figure(fig, out_png, crop=True)  # titles are never cut at the page's edge
