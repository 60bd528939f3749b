"""Intervals and paired tests for comparing architectures on held-out test images.

The unit of resampling is the group (EMPS: the paper an image comes from), not the pixel and
not the image: images of one paper look alike, so resampling images would pretend there is
more independent evidence than there is. Every score is a ratio of counts summed over the
resampled groups -- pixel IoU = TP / (TP + FP + FN), Dice = 2TP / (2TP + FP + FN), particle
F1 = 2 matched / (true + predicted) -- exactly as `evaluate` computes the data-set scores, and
seeds are pooled by summing their counts.

Method (``METHOD``): scipy.stats.bootstrap over groups (paired across the architectures, which
are scored on the same images), 9,999 resamples, bias-corrected and accelerated (BCa) interval,
percentile where BCa is degenerate; Wilcoxon signed-rank test (scipy.stats.wilcoxon) on the
per-group mean of the per-image differences (seed-averaged), so the tested units are
independent; probability of superiority = the share of test images on which the first
architecture's per-image score (seed-averaged) is higher, ties counting one half.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.results.schemas import FINAL_METRICS

N_RESAMPLES = 9_999
CONFIDENCE = 0.95
METHOD = (
    "bootstrap over groups (scipy.stats.bootstrap, 9999 resamples, BCa 95 % interval, "
    "percentile where BCa is degenerate; paired across architectures); Wilcoxon signed-rank "
    "on per-group mean per-image differences; P(superiority) over images, ties 1/2"
)

# metric -> (numerator columns with weights, denominator columns with weights), on the
# per-image table (FINAL_IMAGE_SCHEMA / IMAGE_SCHEMA)
RATIOS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "iou": ({"tp_px": 1.0}, {"tp_px": 1.0, "fp_px": 1.0, "fn_px": 1.0}),
    "dice": ({"tp_px": 2.0}, {"tp_px": 2.0, "fp_px": 1.0, "fn_px": 1.0}),
    "particle_f1": ({"particle_tp": 2.0}, {"n_true": 1.0, "n_pred": 1.0}),
}
# per-image column that each metric is compared on, image by image
PER_IMAGE = {"iou": "iou", "dice": "dice", "particle_f1": "particle_f1"}


def _weighted(frame: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    return sum(frame[c].to_numpy(np.float64) * w for c, w in weights.items())


def group_counts(images: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(numerator, denominator) of ``metric`` summed per group, over images and seeds."""
    num_w, den_w = RATIOS[metric]
    frame = pd.DataFrame(
        {
            "group": images["group"].to_numpy(),
            "num": _weighted(images, num_w),
            "den": _weighted(images, den_w),
        }
    )
    return frame.groupby("group", sort=True)[["num", "den"]].sum()


def ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum(num) / sum(den) along ``axis`` (1.0 where both are 0: nothing to find, nothing
    found, as the data-set scores define it)."""
    n, d = np.sum(num, axis=axis), np.sum(den, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, n / np.where(d > 0, d, 1.0), 1.0)


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, seed: int) -> tuple[float, float]:
    """BCa (else percentile) 95 % interval of ``statistic`` over paired resamples of ``data``
    (one array per quantity, one entry per group)."""
    from scipy.stats import bootstrap

    if len(data[0]) < 2:
        return math.nan, math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():  # a degenerate BCa says so in a warning; we fall back
            warnings.simplefilter("ignore")
            res = bootstrap(
                data,
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=N_RESAMPLES,
                confidence_level=CONFIDENCE,
                method=method,
                random_state=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


def architecture_interval(images: pd.DataFrame, metric: str, seed: int = 0) -> dict[str, Any]:
    """One architecture's ``metric`` over its test images (all its seeds pooled): estimate,
    group-bootstrap 95 % interval, std over seeds, counts."""
    counts = group_counts(images, metric)
    num, den = counts["num"].to_numpy(), counts["den"].to_numpy()
    low, high = _bootstrap((num, den), lambda n, d, axis=-1: ratio(n, d, axis), seed)
    per_seed = [
        float(ratio(*(group_counts(g, metric)[c].to_numpy() for c in ("num", "den"))))
        for _, g in images.groupby("seed")
    ]
    return {
        "estimate": float(ratio(num, den)),
        "ci_low": low,
        "ci_high": high,
        "seed_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan,
        "n_images": int(images["name"].nunique()),
        "n_groups": len(counts),
        "n_seeds": int(images["seed"].nunique()),
    }


def paired_difference(
    a: pd.DataFrame, b: pd.DataFrame, metric: str, seed: int = 0
) -> dict[str, Any]:
    """``metric`` of architecture ``a`` minus that of ``b`` on the images both were scored on:
    estimate, paired group-bootstrap 95 % interval, Wilcoxon signed-rank test over groups,
    and P(a beats b on a random image)."""
    from scipy.stats import wilcoxon

    shared = sorted(set(a["name"]) & set(b["name"]))
    a, b = a[a["name"].isin(shared)], b[b["name"].isin(shared)]
    ca, cb = group_counts(a, metric), group_counts(b, metric)
    cb = cb.loc[ca.index]
    arrays = (
        ca["num"].to_numpy(),
        ca["den"].to_numpy(),
        cb["num"].to_numpy(),
        cb["den"].to_numpy(),
    )

    def diff(na: Any, da: Any, nb: Any, db: Any, axis: int = -1) -> np.ndarray:
        return ratio(na, da, axis) - ratio(nb, db, axis)

    low, high = _bootstrap(arrays, diff, seed)
    col = PER_IMAGE[metric]
    # per-image score, averaged over seeds (NaN scores -- no particle anywhere -- dropped)
    ia = a.groupby("name")[col].mean()
    ib = b.groupby("name")[col].mean()
    both = pd.DataFrame({"a": ia, "b": ib}).dropna()
    d = both["a"] - both["b"]
    superiority = float(((d > 0).sum() + 0.5 * (d == 0).sum()) / len(d)) if len(d) else math.nan
    groups = a.drop_duplicates("name").set_index("name")["group"]
    per_group = d.groupby(groups.loc[d.index].to_numpy()).mean()
    stat, p = math.nan, math.nan
    if (per_group != 0).sum() >= 1:
        res = wilcoxon(per_group.to_numpy(), zero_method="wilcox")
        stat, p = float(res.statistic), float(res.pvalue)
    return {
        "estimate": float(diff(*arrays)),
        "ci_low": low,
        "ci_high": high,
        "n_images": len(shared),
        "n_groups": len(ca),
        "n_seeds": int(min(a["seed"].nunique(), b["seed"].nunique())),
        "wilcoxon_statistic": stat,
        "wilcoxon_p": p,
        "prob_superiority": superiority,
    }


def rank_architectures(images: pd.DataFrame, metric: str = "iou") -> list[str]:
    """Architectures by their pooled ``metric`` on the test images, best first."""
    scores = {
        arch: float(ratio(*(group_counts(g, metric)[c].to_numpy() for c in ("num", "den"))))
        for arch, g in images.groupby("arch")
    }
    return sorted(scores, key=lambda k: -scores[k])


def compare_final(
    images: pd.DataFrame, metrics: Sequence[str] = FINAL_METRICS, seed: int = 0
) -> pd.DataFrame:
    """final.parquet's rows from `final`'s per-image table (FINAL_IMAGE_SCHEMA): each
    architecture's estimate and interval per metric, then the paired difference of every
    architecture against the best one (by pixel IoU; the first row pair is the two best)."""
    from emseg_search.results.schemas import FINAL_SCHEMA

    if images.empty:
        raise ValueError("no test images scored: nothing to compare")
    ranked = rank_architectures(images)
    rows = []
    for arch in ranked:
        sub = images[images["arch"] == arch]
        for metric in metrics:
            rows.append(
                {
                    "kind": "architecture",
                    "arch": arch,
                    "metric": metric,
                    "trial_id": str(sub["trial_id"].iloc[0]),
                    "method": METHOD,
                    **architecture_interval(sub, metric, seed),
                }
            )
    best = ranked[0]
    for other in ranked[1:]:
        for metric in metrics:
            rows.append(
                {
                    "kind": "difference",
                    "arch": best,
                    "arch_b": other,
                    "metric": metric,
                    "method": METHOD,
                    **paired_difference(
                        images[images["arch"] == best],
                        images[images["arch"] == other],
                        metric,
                        seed,
                    ),
                }
            )
    return pd.DataFrame(rows).reindex(columns=FINAL_SCHEMA.names)


def verdict(row: pd.Series | dict[str, Any]) -> str:
    """One sentence on a difference row: whether its interval excludes 0."""
    low, high = row["ci_low"], row["ci_high"]
    what = f"{row['arch']} - {row['arch_b']}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{what}: too few groups for an interval"
    if low > 0 or high < 0:
        better = row["arch"] if low > 0 else row["arch_b"]
        return f"{what}: {better} is better (the 95 % interval excludes 0)"
    return f"{what}: not separable at this budget (the 95 % interval includes 0)"


def shift_change_intervals(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """``inference.robustness.summarize_shifts`` of ``rows`` with, for each shift of the
    reference images (not a synthetic domain, whose images are others), a 95 % interval of its
    IoU change against ``none`` paired over the images (``paired_difference``, each image its
    own group: the benchmark samples about one image per paper; seeds, where ``rows`` carry
    them, pooled per image) and the median of the per-image changes (seed-averaged):
    ``iou_change_ci_low``, ``iou_change_ci_high``, ``iou_change_median_image``. A pooled change
    can rest on one large image (one the model fails unshifted makes every shift of it look
    close to the reference); a wide interval, or a median far from the pooled change, says so."""
    from emseg_search.inference.robustness import summarize_shifts

    table = summarize_shifts(rows)
    frame = pd.DataFrame(list(rows))
    if "seed" not in frame:
        frame = frame.assign(seed=0)
    frame = frame.assign(group=frame["name"])
    base = frame[frame["shift"] == "none"]
    base_iou = base.groupby("name")["iou"].mean()
    added = []
    for shift, kind in zip(table["shift"], table["kind"], strict=True):
        sub = frame[frame["shift"] == shift]
        if shift == "none" or kind == "domain" or not set(sub["name"]) & set(base["name"]):
            added.append((math.nan, math.nan, math.nan))
            continue
        r = paired_difference(sub, base, "iou")
        per = sub.groupby("name")["iou"].mean() - base_iou
        added.append((r["ci_low"], r["ci_high"], float(per.dropna().median())))
    columns = ["iou_change_ci_low", "iou_change_ci_high", "iou_change_median_image"]
    return table.assign(**dict(zip(columns, map(list, zip(*added, strict=True)), strict=True)))


def robustness_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """``final/robustness.parquet``'s rows (every final run x shift x image) summarised per
    architecture: ``shift_change_intervals`` of each architecture's rows (seeds pooled), with
    ``arch`` and ``seeds`` in front and ``images`` the distinct images of each shift;
    FINAL_ROBUSTNESS_SUMMARY_SCHEMA's columns."""
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SUMMARY_SCHEMA

    parts = []
    for arch in dict.fromkeys(rows["arch"]):
        mine = rows[rows["arch"] == arch]
        table = shift_change_intervals(mine.to_dict("records"))
        images = mine.groupby("shift")["name"].nunique()  # distinct images, not image x seed
        parts.append(
            table.assign(
                arch=arch, seeds=int(mine["seed"].nunique()), images=table["shift"].map(images)
            )
        )
    columns = FINAL_ROBUSTNESS_SUMMARY_SCHEMA.names
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def robustness_summary_table(final_dir: Path) -> pd.DataFrame | None:
    """``final_dir/robustness_summary.parquet``, written from ``final_dir/robustness.parquet``
    (``robustness_summary``) where it is missing or older than the rows; None when `final`
    ran without shifts. The bootstrap takes seconds per architecture: the summary is computed
    once, and the report and the dashboard read it."""
    from emseg_search.results.io import is_stale, read_table, write_table
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SUMMARY_SCHEMA

    rows_path = final_dir / "robustness.parquet"
    path = final_dir / "robustness_summary.parquet"
    if not rows_path.is_file():
        return None
    if not is_stale(path, rows_path):
        return read_table(path).to_pandas()
    summary = robustness_summary(read_table(rows_path).to_pandas())
    write_table(summary.to_dict("records"), FINAL_ROBUSTNESS_SUMMARY_SCHEMA, path)
    return summary
