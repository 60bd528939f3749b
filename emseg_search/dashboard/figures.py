"""Plotly figures of the dashboard, built as plain dicts (no per-trace validation: a 1,000-trial
experiment draws in milliseconds). Every point carries its trial id in ``customdata`` so that a
click selects the trial everywhere."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.dashboard.data import is_categorical
from emseg_search.results.pareto import pareto_mask

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
FOCUS = "#000000"
MARGIN = {"l": 55, "r": 15, "t": 40, "b": 50}

Figure = dict[str, Any]


def colors(values: list[str]) -> dict[str, str]:
    """A fixed colour per value (sorted, so each architecture keeps its colour across charts)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(map(str, values)))}


def empty(message: str, height: int = 320) -> Figure:
    """A blank figure that says why it is blank."""
    return {
        "data": [],
        "layout": {
            "height": height,
            "margin": MARGIN,
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [
                {
                    "text": message,
                    "showarrow": False,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "font": {"size": 13, "color": "#666"},
                }
            ],
        },
    }


def _layout(title: str, xtitle: str, ytitle: str, height: int = 320, **extra: Any) -> Figure:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01},
        "height": height,
        "margin": MARGIN,
        "xaxis": {"title": {"text": xtitle}, "zeroline": False},
        "yaxis": {"title": {"text": ytitle}, "zeroline": False},
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.32},
        "uirevision": "keep",  # zoom and legend survive live updates
        "clickmode": "event",
        **extra,
    }


def _nan_to_none(values: Any) -> list[Any]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def _focus_trace(x: list[Any], y: list[Any], trial_id: str) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "markers",
        "x": x,
        "y": y,
        "name": f"selected {trial_id}",
        "customdata": [trial_id] * len(x),
        "marker": {"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": FOCUS, "width": 2.5}},
        "hoverinfo": "skip",
    }


def _arch_traces(
    archs: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    trial_ids: np.ndarray,
    hover: str,
    size: int,
    opacity: float,
) -> list[dict[str, Any]]:
    """One marker trace per architecture (first-seen order; the colours of ``colors``), each
    point carrying its trial id; ``{arch}`` in ``hover`` is the architecture's name."""
    cmap = colors(list(pd.unique(archs)))
    traces = []
    for arch in pd.unique(archs):
        m = archs == arch
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": arch,
                "x": _nan_to_none(xs[m].tolist()),
                "y": _nan_to_none(ys[m].tolist()),
                "customdata": trial_ids[m].tolist(),
                "marker": {"size": size, "color": cmap[arch], "opacity": opacity},
                "hovertemplate": hover.replace("{arch}", arch),
            }
        )
    return traces


def best_so_far(bsf: pd.DataFrame, trials: pd.DataFrame, x: str, focus: str | None) -> Figure:
    """Each trial's score and the best so far, against trial number (``x="order"``) or
    cumulative compute in hours (``x="compute_s"``)."""
    if bsf["value"].notna().sum() == 0:
        return empty("no scored trial yet")
    xs = bsf[x].to_numpy(float) / (3600.0 if x == "compute_s" else 1.0)
    data = _arch_traces(
        trials["arch"].astype(str).to_numpy(),
        xs,
        bsf["value"].to_numpy(float),
        bsf["trial_id"].to_numpy(),
        "trial %{customdata}<br>score %{y:.4f}<extra>{arch}</extra>",
        size=6,
        opacity=0.75,
    )
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "best so far",
            "x": xs.tolist(),
            "y": _nan_to_none(bsf["best"].to_numpy(float).tolist()),
            "line": {"shape": "hv", "color": "#333", "width": 2},
            "hoverinfo": "skip",
        }
    )
    if focus is not None and focus in set(bsf["trial_id"]):
        i = int(np.flatnonzero(bsf["trial_id"].to_numpy() == focus)[0])
        data.append(_focus_trace([float(xs[i])], _nan_to_none([bsf["value"].iloc[i]]), focus))
    xtitle = "trial (start order)" if x == "order" else "compute (hours of training + validation)"
    return {"data": data, "layout": _layout("Best so far", xtitle, "validation IoU (best epoch)")}


def distribution(trials: pd.DataFrame, focus: str | None) -> Figure:
    """Best validation IoU per architecture: a box and every trial as a jittered point."""
    t = trials.dropna(subset=["best_val_iou"])
    if not len(t):
        return empty("no scored trial yet")
    archs = sorted(t["arch"].astype(str).unique())
    cmap = colors(archs)
    rng = np.random.default_rng(0)
    data = []
    for i, arch in enumerate(archs):
        g = t[t["arch"].astype(str) == arch]
        y = g["best_val_iou"].astype(float).tolist()
        data.append(
            {
                "type": "box",
                "x": [i] * len(y),
                "y": y,
                "name": arch,
                "boxpoints": False,
                "marker": {"color": cmap[arch]},
                "hoverinfo": "skip",
                "showlegend": False,
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": (i + rng.uniform(-0.18, 0.18, len(y))).tolist(),
                "y": y,
                "name": arch,
                "customdata": g["trial_id"].tolist(),
                "text": g["status"].astype(str).tolist(),
                "marker": {"size": 6, "color": cmap[arch], "opacity": 0.7},
                "hovertemplate": "trial %{customdata} (%{text})<br>IoU %{y:.4f}<extra></extra>",
                "showlegend": False,
            }
        )
    if focus is not None and focus in set(t["trial_id"]):
        row = t[t["trial_id"] == focus].iloc[0]
        data.append(_focus_trace([archs.index(str(row["arch"]))], [row["best_val_iou"]], focus))
    layout = _layout("Validation IoU by architecture", "", "validation IoU (best epoch)")
    layout["xaxis"].update(tickvals=list(range(len(archs))), ticktext=archs)
    return {"data": data, "layout": layout}


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis from ``low`` to ``high``: both ends (plotly draws a parallel axis
    only between its outer ticks), and between them the decades when there are 2 or more, else
    1, 2 and 5 x 10^k; none closer than a tenth of the axis to an end."""
    k0, k1 = math.floor(math.log10(low)), math.ceil(math.log10(high))
    inner = [10.0**k for k in range(k0, k1 + 1) if low < 10.0**k < high]
    if len(inner) < 2:
        inner = [
            m * 10.0**k for k in range(k0, k1 + 1) for m in (1, 2, 5) if low < m * 10.0**k < high
        ]
    span = math.log10(high / low) if high > low else 1.0
    keep = [t for t in inner if min(math.log10(t / low), math.log10(high / t)) > 0.1 * span]
    return [low, *keep, high] if high > low else [low]


def parallel(
    trials: pd.DataFrame,
    params: list[str],
    arch: str | None,
    log: set[str],
    focus: str | None,
    limit: int | None = None,
) -> Figure:
    """Parallel coordinates of the sampled parameters against IoU. With ``arch`` set, only its
    trials and the parameters that apply to it; with None, the parameters every trial has
    (architecture-aware: a DeepLab-only parameter is not drawn for UNet trials). With
    ``limit``, the best ``limit`` trials only (and the selected one)."""
    t = trials.dropna(subset=["best_val_iou"])
    if arch:
        t = t[t["arch"].astype(str) == arch]
    if len(t) < 2:
        return empty("fewer than 2 scored trials here")
    total = len(t)
    if limit is not None and total > limit:
        keep = t["score"].rank(ascending=False, method="first") <= limit
        t = t[keep.to_numpy() | (t["trial_id"] == focus).to_numpy()]
    dims = []
    for name in params:
        col = t[f"params_{name}"]
        if col.isna().any() or col.nunique(dropna=True) < 2 and name != "arch":
            continue  # not sampled for every trial shown, or constant
        if is_categorical(col):
            cats = sorted(col.astype(str).unique())
            codes = col.astype(str).map({c: i for i, c in enumerate(cats)}).tolist()
            dims.append(
                {
                    "label": name,
                    "values": codes,
                    "tickvals": list(range(len(cats))),
                    "ticktext": cats,
                    "range": [-0.3, len(cats) - 0.7],
                }
            )
        elif name in log and (col > 0).all():
            v = np.log10(col.astype(float))
            ticks = log_ticks(float(col.min()), float(col.max()))
            dims.append(
                {
                    "label": f"{name} (log)",
                    "values": v.tolist(),
                    "tickvals": np.log10(ticks).tolist(),
                    "ticktext": [f"{t:.3g}" for t in ticks],
                    "range": [float(v.min()), float(v.max())],
                }
            )
        else:
            dims.append({"label": name, "values": col.astype(float).tolist()})
    iou = t["best_val_iou"].astype(float)
    dims.append({"label": "val IoU (best)", "values": iou.tolist()})
    line: dict[str, Any] = {
        "color": iou.tolist(),
        "colorscale": "Viridis",
        "showscale": True,
        "colorbar": {"title": {"text": "IoU"}, "thickness": 12},
    }
    if focus is not None and focus in set(t["trial_id"]):
        # the selected trial stands out: everything else is greyed by the constraint range
        pos = int(np.flatnonzero(t["trial_id"].to_numpy() == focus)[0])
        half = max(float(iou.max() - iou.min()), 1e-6) * 0.004
        dims[-1]["constraintrange"] = [iou.iloc[pos] - half, iou.iloc[pos] + half]
    title = f"Parameters against IoU: {arch or 'all architectures (shared parameters)'}"
    if len(t) < total:
        title += f"<br><sup>the best {len(t)} of {total} trials</sup>"
    return {
        "data": [{"type": "parcoords", "dimensions": dims, "line": line}],
        "layout": {
            "title": {"text": title, "font": {"size": 14}, "x": 0.01},
            "height": 360,
            "margin": {"l": 110, "r": 60, "t": 90, "b": 30},
            "uirevision": f"parcoords-{arch}",
        },
    }


def pareto(
    trials: pd.DataFrame,
    objectives: list[tuple[str, str, bool]],
    focus: str | None,
    declared: int = 0,
) -> Figure:
    """The first two objectives against each other, the Pareto-optimal trials marked.

    ``declared``: how many objectives the search itself optimised, when these two are among
    them; the front is then trials.parquet's ``pareto`` column (over the completed trials and
    every declared objective), joined by a line when there are only these two. Otherwise
    the trials shown that no other shown trial beats on both, joined by a line.
    """
    (xc, xl, xmax), (yc, yl, ymax) = objectives[0], objectives[1]
    t = trials.dropna(subset=[xc, yc])
    if len(t) < 2:
        return empty("fewer than 2 trials with both objectives")
    if declared:
        front = t["pareto"].fillna(False).astype(bool).to_numpy()
    else:
        front = pareto_mask(t[[xc, yc]].astype(float).to_numpy(), [xmax, ymax])
    data = _arch_traces(
        t["arch"].astype(str).to_numpy(),
        t[xc].astype(float).to_numpy(),
        t[yc].astype(float).to_numpy(),
        t["trial_id"].to_numpy(),
        "trial %{customdata}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
        size=7,
        opacity=0.7,
    )
    f = t[front].sort_values(xc)
    joined = declared in (0, 2)  # a front of more objectives is no line in two of them
    data.append(
        {
            "type": "scatter",
            "mode": "lines+markers" if joined else "markers",
            "name": "Pareto front",
            "x": f[xc].astype(float).tolist(),
            "y": f[yc].astype(float).tolist(),
            "customdata": f["trial_id"].tolist(),
            "line": {"shape": "hv" if not ymax else "linear", "color": "#333", "dash": "dot"},
            "marker": {"size": 11, "symbol": "diamond-open", "color": "#333"},
            "hovertemplate": "front: trial %{customdata}<extra></extra>",
        }
    )
    if focus is not None and focus in set(t["trial_id"]):
        row = t[t["trial_id"] == focus].iloc[0]
        data.append(_focus_trace([row[xc]], [row[yc]], focus))
    if declared:
        done = int((t["status"] == "completed").sum())
        over = "the search's objectives" if declared == 2 else f"all {declared} objectives"
        title = f"Pareto front over {over} ({len(f)} of {done} completed)"
    else:
        title = f"Pareto front ({len(f)} of {len(t)} trials non-dominated)"
    return {"data": data, "layout": _layout(title, xl, yl)}


def curves(
    epochs: pd.DataFrame, trial_ids: list[str], metric: str, labels: dict[str, str]
) -> Figure:
    """``metric`` per epoch of each trial in ``trial_ids`` (in that order)."""
    if metric not in epochs:
        return empty(f"no {metric} in epochs.parquet")
    e = epochs[epochs["trial_id"].isin(trial_ids)]
    if not len(e):
        return empty("select trials (leaderboard checkboxes or a click on a point)")
    data = []
    for i, tid in enumerate(trial_ids):
        g = e[e["trial_id"] == tid].sort_values("epoch")
        if not len(g):
            continue
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": labels.get(tid, tid),
                "x": g["epoch"].astype(int).tolist(),
                "y": _nan_to_none(g[metric].astype(float).tolist()),
                "customdata": [tid] * len(g),
                "line": {"color": PALETTE[i % len(PALETTE)], "width": 3 if i == 0 else 1.8},
                "marker": {"size": 5},
                "hovertemplate": f"trial {tid}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
            }
        )
    layout = _layout(f"Learning curves: {metric}", "epoch", metric, showlegend=True)
    if metric == "lr":
        layout["yaxis"]["type"] = "log"
    return {"data": data, "layout": layout}


def trial_curves(epochs: pd.DataFrame, trial_id: str) -> Figure:
    """One trial: validation metrics (left axis) and training loss (right axis) per epoch."""
    g = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    if not len(g):
        return empty("no epoch reported yet")
    data = []
    for col, color in (
        ("val_iou", "#1f77b4"),
        ("val_dice", "#2ca02c"),
        ("val_robust_iou", "#9467bd"),
        ("val_score", "#8c564b"),
        ("val_particle_f1", "#e377c2"),
    ):
        if col not in g or g[col].isna().all():
            continue
        if col == "val_score" and np.allclose(g[col], g["val_iou"], equal_nan=True):
            continue  # selection by IoU: the same line
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": col,
                "x": g["epoch"].tolist(),
                "y": _nan_to_none(g[col].astype(float).tolist()),
                "customdata": [trial_id] * len(g),
                "line": {"color": color},
            }
        )
    if "train_loss" in g:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "train_loss (right axis)",
                "x": g["epoch"].tolist(),
                "y": _nan_to_none(g["train_loss"].astype(float).tolist()),
                "yaxis": "y2",
                "line": {"color": "#d62728", "dash": "dash"},
            }
        )
    layout = _layout(f"Trial {trial_id}: learning curves", "epoch", "validation", showlegend=True)
    layout["yaxis2"] = {
        "title": {"text": "training loss"},
        "overlaying": "y",
        "side": "right",
        "tickformat": ".2f",
    }
    layout["margin"] = {**MARGIN, "r": 55}
    return {"data": data, "layout": layout}


def importance(frame: pd.DataFrame, note: str) -> Figure:
    """Horizontal bars: each parameter's importance for the score."""
    if not len(frame):
        return empty(note)
    f = frame.sort_values("importance")
    layout = _layout("Parameter importance", "importance (share of variance)", "", height=320)
    layout["margin"] = {**MARGIN, "l": 110}
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": f["importance"].tolist(),
                "y": f["param"].tolist(),
                "marker": {"color": "#4c78a8"},
                "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
            }
        ],
        "layout": layout,
    }


def compare_distribution(trials: pd.DataFrame) -> Figure:
    """Several experiments side by side: best validation IoU per experiment and architecture."""
    t = trials.dropna(subset=["best_val_iou"])
    if not len(t):
        return empty("no scored trial in these experiments")
    data = []
    cmap = colors(list(t["arch"].astype(str).unique()))
    for arch in sorted(t["arch"].astype(str).unique()):
        g = t[t["arch"].astype(str) == arch]
        data.append(
            {
                "type": "box",
                "name": arch,
                "x": g["experiment"].tolist(),
                "y": g["best_val_iou"].astype(float).tolist(),
                "boxpoints": "all",
                "jitter": 0.3,
                "pointpos": 0,
                "marker": {"color": cmap[arch], "size": 5},
            }
        )
    layout = _layout("Validation IoU per experiment and architecture", "", "validation IoU")
    layout["boxmode"] = "group"
    return {"data": data, "layout": layout}


def compare_best_so_far(frames: dict[str, pd.DataFrame]) -> Figure:
    """Best so far against cumulative compute, one line per experiment."""
    data = []
    for i, (name, bsf) in enumerate(frames.items()):
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": (bsf["compute_s"] / 3600).tolist(),
                "y": _nan_to_none(bsf["best"].tolist()),
                "line": {"shape": "hv", "color": PALETTE[i % len(PALETTE)]},
            }
        )
    if not data:
        return empty("no experiment selected")
    return {
        "data": data,
        "layout": _layout("Best so far against compute", "compute (hours)", "best validation IoU"),
    }


def shift_changes(summary: pd.DataFrame) -> Figure:
    """Each shift's IoU change against ``none`` on the held-out test images (`final --shifts`),
    a point per architecture with its 95 % interval over the images as error bars; a dashed
    band marks the issue's +-0.03. Synthetic domains (other images, no paired change) are left
    to the table."""
    paired = summary[summary["iou_change_ci_low"].notna()]
    if not len(paired):
        return empty("no shift of the test images to compare with none")
    shifts = list(dict.fromkeys(paired["shift"]))
    archs = list(dict.fromkeys(paired["arch"]))
    cmap = colors(archs)
    traces = []
    for i, arch in enumerate(archs):
        t = paired[paired["arch"] == arch].set_index("shift").reindex(shifts)
        change = t["iou_change"].to_numpy(np.float64)
        offset = (i - (len(archs) - 1) / 2) * min(0.15, 0.6 / len(archs))
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{arch} ({int(t['seeds'].max())} seed(s))",
                "x": [j + offset for j in range(len(shifts))],
                "y": _nan_to_none(change.tolist()),
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": _nan_to_none((t["iou_change_ci_high"] - change).tolist()),
                    "arrayminus": _nan_to_none((change - t["iou_change_ci_low"]).tolist()),
                    "color": cmap[arch],
                },
                "customdata": [
                    [s, lo, hi, med]
                    for s, lo, hi, med in zip(
                        shifts,
                        t["iou_change_ci_low"],
                        t["iou_change_ci_high"],
                        t["iou_change_median_image"],
                        strict=True,
                    )
                ],
                "marker": {"size": 9, "color": cmap[arch]},
                "hovertemplate": (
                    f"{arch} · %{{customdata[0]}}<br>IoU change %{{y:+.3f}} "
                    "[%{customdata[1]:+.3f}, %{customdata[2]:+.3f}]<br>median image "
                    "%{customdata[3]:+.3f}<extra></extra>"
                ),
            }
        )
    layout = _layout(
        "IoU change vs none under each shift (95 % interval over the test images)",
        "",
        "IoU change vs none",
        height=360,
    )
    layout["xaxis"] = {
        "tickmode": "array",
        "tickvals": list(range(len(shifts))),
        "ticktext": shifts,
        "tickangle": -35,
        "zeroline": False,
    }
    layout["shapes"] = [
        {
            "type": "rect",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": -0.03,
            "y1": 0.03,
            "fillcolor": "rgba(44,160,44,0.08)",
            "line": {"color": "rgba(44,160,44,0.5)", "dash": "dash", "width": 1},
        },
        {
            "type": "line",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": 0,
            "y1": 0,
            "line": {"color": "#999", "width": 1},
        },
    ]
    layout["margin"] = {**MARGIN, "b": 90}
    return {"data": traces, "layout": layout}
