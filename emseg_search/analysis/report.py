"""An experiment's report: ``EXPERIMENT_DIR/report/index.html`` plus PNGs, offline (no script,
no CDN: it opens from file://).

It never trains. It shows what the search measured on its validation split (flattered by the
selection of the best of N trials, and it says so) and, when `final` has run, the held-out test
comparison with intervals. The comparison grid runs the chosen models on a few images (CPU
inference); without `final` the best model of each architecture is first scored on (up to
``max_eval_images`` of) its validation images to choose them.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.analysis import comparison, figures
from emseg_search.analysis.intervals import compare_final, rank_architectures, verdict

REPORT_DIR = "report"
FINAL_DIR = "final"


@dataclass
class Scored:
    """Per-image scores of each architecture's model on one set of images, and where from."""

    source: str  # "test" (final) or "validation"
    description: str
    data_dir: Path
    per_image: pd.DataFrame  # arch, seed, name, group, iou, dice, particle_f1, ...
    models: dict[str, Path]  # arch -> the model shown in the grid
    true_particles: pd.DataFrame | None = None
    pred_particles: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_final(exp_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] | None:
    """(final.parquet rows, final/images.parquet, final/final.json) when `final` finished,
    else None. final.parquet is computed in memory when only the images table exists."""
    from emseg_search.results.io import read_table

    images_path = exp_dir / FINAL_DIR / "images.parquet"
    info_path = exp_dir / FINAL_DIR / "final.json"
    if not images_path.is_file() or not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if not info.get("finished_at"):
        return None
    images = read_table(images_path).to_pandas()
    final_path = exp_dir / "final.parquet"
    table = read_table(final_path).to_pandas() if final_path.is_file() else compare_final(images)
    return table, images, info


def _per_image_final(images: pd.DataFrame, info: dict[str, Any], exp_dir: Path) -> Scored:
    """Scored from `final`'s tables; the grid shows each architecture's seed-0 model."""
    from emseg_search.results.io import read_table

    models = {}
    for key, run in info.get("runs", {}).items():
        arch, seed = key.split("/seed")
        if int(seed) == 0:
            models[arch] = Path(run["model_dir"])
    particles_path = exp_dir / FINAL_DIR / "particles.parquet"
    true_p, pred_p = None, {}
    if particles_path.is_file():
        parts = read_table(particles_path).to_pandas()
        true_p = parts[parts["kind"] == "true"]
        for arch in images["arch"].unique():
            pred_p[arch] = parts[
                (parts["kind"] == "pred") & (parts["arch"] == arch) & (parts["seed"] == 0)
            ]
    return Scored(
        source="test",
        description=f"{info.get('split_names', '?')} held-out test images of "
        f"{info.get('test_data')} ({info.get('split')}; {info.get('n_groups', '?')} groups)",
        data_dir=Path(info.get("test_data", "")),
        per_image=images,
        models=models,
        true_particles=true_p,
        pred_particles=pred_p,
    )


def _per_image_validation(
    best: pd.DataFrame, data_dir: Path, max_images: int, log: Callable[[str], None]
) -> Scored:
    """Score each architecture's best model on (up to ``max_images`` of) its validation
    images, evenly spread over the sorted names."""
    from emseg_search.data import load_data
    from emseg_search.inference.artifact import load_artifact
    from emseg_search.inference.evaluation import evaluate_images, select
    from emseg_search.inference.predictor import Predictor
    from emseg_search.particles.measurement import concat_particles

    data = load_data(data_dir)
    first = load_artifact(best["model_dir"].iloc[0]).config
    names, described = select(data, "val", first)
    names = sorted(names)
    if len(names) > max_images:
        keep = np.unique(np.linspace(0, len(names) - 1, max_images).round().astype(int))
        names = [names[i] for i in keep]
    items = data.subset(names)
    frames, models, preds = [], {}, {}
    true_p = None
    for row in best.itertuples():
        t0 = time.perf_counter()
        predictor = Predictor.from_dir(row.model_dir)
        done = evaluate_images(predictor, items, split_touching=True, progress=False)
        frames.append(pd.DataFrame(done.rows).assign(arch=row.arch, seed=0, trial_id=row.trial_id))
        models[row.arch] = Path(row.model_dir)
        preds[row.arch] = concat_particles(done.pred_tables)
        true_p = concat_particles(done.true_tables)
        log(
            f"report: scored {row.arch} ({row.trial_id}) on {len(items)} validation images "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    per_image = pd.concat(frames, ignore_index=True).assign(group=lambda f: f["name"])
    return Scored(
        source="validation",
        description=f"{len(names)} images of the search's validation split ({described})",
        data_dir=data.root,
        per_image=per_image,
        models=models,
        true_particles=true_p,
        pred_particles=preds,
    )


def choose_images(per_image: pd.DataFrame, archs: list[str], n: int) -> list[tuple[str, str]]:
    """(name, why) of ``n`` images that show where the models differ: ordered by the paired
    difference in per-image IoU between the two best architectures (seed-averaged), from the
    image the first wins by most, through the median, to the one the second wins by most.
    With one architecture: from its best image to its worst."""
    iou = per_image.groupby(["name", "arch"])["iou"].mean().unstack("arch")
    if len(archs) >= 2:
        a, b = archs[0], archs[1]
        score = (iou[a] - iou[b]).dropna().sort_values(ascending=False)
        ends = (f"{a} ahead by most", f"{b} ahead by most")

        def describe(v: float) -> str:
            return f"IoU {a} - {b} = {v:+.3f}"
    else:
        score = iou[archs[0]].dropna().sort_values(ascending=False)
        ends = ("best image", "worst image")

        def describe(v: float) -> str:
            return f"IoU {v:.3f}"

    if score.empty:
        return []
    picks = np.unique(np.linspace(0, len(score) - 1, min(n, len(score))).round().astype(int))
    out = []
    for i in picks:
        if i == 0:
            why = ends[0]
        elif i == len(score) - 1:
            why = ends[1]
        elif i == len(score) // 2 or len(picks) == 3:
            why = "median difference" if len(archs) >= 2 else "median image"
        else:
            why = f"rank {i + 1} of {len(score)}"
        out.append((str(score.index[i]), f"{why}: {describe(float(score.iloc[i]))}"))
    return out


def grid_rows(scored: Scored, archs: list[str], n: int) -> list[dict[str, Any]]:
    """The comparison grid's rows: each chosen image with every architecture's prediction
    (instance labels, split touching particles) and its per-image scores."""
    from emseg_search.data import load_data
    from emseg_search.inference.prediction import segment
    from emseg_search.inference.predictor import Predictor

    chosen = choose_images(scored.per_image, archs, n)
    if not chosen:
        return []
    data = load_data(scored.data_dir)
    items = dict(zip([c[0] for c in chosen], data.subset([c[0] for c in chosen]), strict=True))
    predictors = {a: Predictor.from_dir(scored.models[a]) for a in archs}
    shown = scored.per_image
    if "seed" in shown:
        shown = shown[shown["seed"] == 0]
    rows = []
    for name, why in chosen:
        item = items[name]
        row = {
            "name": name,
            "why": why,
            "image": item.image,
            "truth": item.instances,
            "pred": {},
            "scores": {},
        }
        for arch in archs:
            seg = segment(predictors[arch], item.image, name, split_touching=True)
            row["pred"][arch] = seg.instances
            s = shown[(shown["arch"] == arch) & (shown["name"] == name)].iloc[0]
            row["scores"][arch] = {"iou": float(s["iou"]), "particle_f1": float(s["particle_f1"])}
        rows.append(row)
    return rows


# ---------------------------------------------------------------- HTML


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else floats.format(v)
        return html.escape(str(v)) if v is not None else ""

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _shifts_table(top: pd.DataFrame, shifts: pd.DataFrame) -> str:
    """The best trials' IoU under each of the space's val_shifts at their best epoch (empty
    without val_shifts, or for tables from before epochs.parquet kept each shift's IoU)."""
    rows = shifts.reindex(top["trial_id"]).dropna(how="all")
    if rows.empty:
        return ""
    if "best_val_robust_iou" in top:
        rows = rows.assign(
            best_val_robust_iou=top.set_index("trial_id")["best_val_robust_iou"].reindex(rows.index)
        )
    return (
        "<h3>Best trials under the val_shifts</h3><p class='note'>Validation IoU under each "
        "shift the space scores its trials on (<code>val_shifts</code>), at each trial's best "
        "epoch; best_val_robust_iou is their mean.</p>" + _table(rows.reset_index())
    )


def _rank_text(mixed: bool) -> str:
    """What ranks the trials (and picks each one's best epoch), in words."""
    if mixed:
        return (
            "val_score = (1 - robust_weight) x validation IoU + robust_weight x the mean IoU "
            "under the val_shifts (best_val_robust_iou), at each trial's best epoch"
        )
    return "validation IoU at each trial's best epoch"


def _param_text(value: Any) -> str:
    """A sampled parameter's value as the tables show it: 4 significant digits for numbers
    (a learning rate of 3e-05 must not read 0.0000), lists comma-separated."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return ",".join(map(str, value))
    return str(value)


def _unprefixed(column: str) -> str:
    """A trials column as the tables head it: a sampled parameter by its own name."""
    return column.removeprefix("params_")


def _img(name: str, alt: str) -> str:
    return f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}"></figure>'


def _p_value(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _split_text(split: Any) -> str:
    """experiment.json's split as words: '128 train / 32 validation images (source)'."""
    if not isinstance(split, dict):
        return str(split)
    return (
        f"{split.get('train', '?')} training / {split.get('val', '?')} validation images "
        f"({split.get('source', 'source unknown')})"
    )


def _final_table(final: pd.DataFrame) -> str:
    archs = final[final["kind"] == "architecture"]
    wide = []
    for arch, g in archs.groupby("arch", sort=False):
        row: dict[str, Any] = {"architecture": arch, "trial": g["trial_id"].iloc[0]}
        for r in g.itertuples():
            row[r.metric] = f"{r.estimate:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]"
            if r.metric == "iou":
                row["IoU std over seeds"] = "" if math.isnan(r.seed_std) else f"{r.seed_std:.4f}"
        row["seeds"] = int(g["n_seeds"].iloc[0])
        row["images / groups"] = f"{int(g['n_images'].iloc[0])} / {int(g['n_groups'].iloc[0])}"
        wide.append(row)
    diffs = final[final["kind"] == "difference"].copy()
    diffs_view = pd.DataFrame(
        {
            "difference": [f"{r.arch} - {r.arch_b}" for r in diffs.itertuples()],
            "metric": diffs["metric"],
            "estimate [95 % CI]": [
                f"{r.estimate:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" for r in diffs.itertuples()
            ],
            "Wilcoxon p (groups)": [_p_value(p) for p in diffs["wilcoxon_p"]],
            "P(first beats second on an image)": diffs["prob_superiority"],
        }
    )
    verdicts = "".join(
        f"<li>{html.escape(verdict(r))}</li>" for _, r in diffs.iterrows() if r["metric"] == "iou"
    )
    method = html.escape(str(final["method"].dropna().iloc[0])) if len(final) else ""
    return (
        _table(pd.DataFrame(wide))
        + "<h3>Paired differences (against the best architecture)</h3>"
        + _table(diffs_view)
        + (f"<ul>{verdicts}</ul>" if verdicts else "")
        + f"<p class='note'>Method: {method}.</p>"
    )


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;display:block;max-width:100%;
overflow-x:auto}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{margin:.6em 0} img{max-width:100%;border:1px solid #ddd}
.row figure{display:inline-block;width:49%;margin:.6em 0}
.note{color:#555;font-size:.9em}
.warn{background:#fff4d6;padding:.5em;border-left:4px solid #e0a800}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
"""


def robustness_section(exp_dir: Path, out: Path) -> str:
    """The "Robustness" section from final/robustness.parquet (`final --shifts`): per shift and
    architecture, IoU and particle F1 pooled over seeds, each shift's IoU change with its
    interval, the robustness score, a chart per architecture; "" when `final` ran without
    shifts. The per-architecture summary is final/robustness_summary.parquet (written here
    where `final` did not)."""
    from emseg_search.analysis.intervals import robustness_summary_table
    from emseg_search.inference.figures import robustness_chart
    from emseg_search.inference.robustness import robustness_score
    from emseg_search.results.io import format_change

    summary = robustness_summary_table(exp_dir / FINAL_DIR)
    if summary is None or summary.empty:
        return ""
    archs = list(dict.fromkeys(summary["arch"]))
    tables, scores = {}, {}
    for arch in archs:
        table = summary[summary["arch"] == arch].reset_index(drop=True)
        tables[arch], scores[arch] = table, robustness_score(table)
        robustness_chart(
            table,
            out / f"robustness_{arch}.png",
            f"{arch}: pooled over {int(table['seeds'].iloc[0])} seed(s)",
        )
    shifts = list(tables[archs[0]]["shift"])
    wide = pd.DataFrame({"shift": shifts, "kind": list(tables[archs[0]]["kind"])})
    for arch in archs:
        t = tables[arch].set_index("shift")
        wide[f"{arch} IoU"] = [t["iou"].get(n, float("nan")) for n in shifts]
        wide[f"{arch} F1"] = [t["particle_f1"].get(n, float("nan")) for n in shifts]
        wide[f"{arch} IoU change vs none [95 %]"] = [
            format_change(t.loc[n]) if n in t.index else "" for n in shifts
        ]
    score_row = {"shift": "robustness score (mean of all but none)", "kind": ""}
    for arch in archs:
        score_row[f"{arch} IoU"] = scores[arch]["robustness_iou"]
        score_row[f"{arch} F1"] = scores[arch]["robustness_f1"]
    wide = pd.concat([wide, pd.DataFrame([score_row])], ignore_index=True)
    n_images = int(summary.loc[summary["shift"] == "none", "images"].max())
    return (
        "<h2>Robustness (held-out test images under controlled shifts)</h2>"
        f"<p>Every final run scored on {n_images} of the test images under each shift "
        "(scale, dose and read noise, defocus, contrast, gamma, inverted contrast; image and "
        "mask shifted together, fixed seed) and on the generator's synthetic domains; pixel "
        "IoU and particle F1 pooled over images and seeds. The robustness score is the mean "
        "over every row but <code>none</code>. Each shift of the test images has its IoU "
        "change against <code>none</code> with a 95 % interval paired over the images (seeds "
        "pooled per image): an interval across 0 is a change these images cannot show. See "
        "docs/robustness.md for what each shift is.</p>"
        + _table(wide)
        + "".join(_img(f"robustness_{a}.png", a) for a in archs)
    )


def pareto_section(trials: pd.DataFrame, objectives: dict[str, str], out: Path) -> str:
    """The "Objectives" section of a multi-objective search: the front as a figure and a
    table of its trials; "" without objectives. The ``pareto`` column of trials.parquet says
    which trials are on it (computed here for a table that predates the column)."""
    from emseg_search.results.pareto import objective_column, pareto_flags

    if not objectives:
        return ""
    if "pareto" not in trials or trials["pareto"].isna().all():
        trials = trials.assign(pareto=pareto_flags(trials.to_dict("records"), objectives))
    columns = [objective_column(m) for m in objectives]
    trials = trials.assign(**{c: trials.get(c, np.nan) for c in columns})
    figures.pareto_plot(trials, objectives, out / "pareto.png")
    front = trials[trials["pareto"].fillna(False).astype(bool)]
    shown = [c for c in ("trial_id", "arch", "encoder", "loss", "target") if c in front]
    table = front[shown + columns + ["best_epoch"]].sort_values(columns[0], ascending=False)
    wanted = ", ".join(
        f"<code>{html.escape(m)}</code> ({'max' if d == 'max' else 'min'})"
        for m, d in objectives.items()
    )
    n_done = int((trials["status"] == "completed").sum())
    return (
        "<h2>Objectives: the Pareto front (validation numbers)</h2>"
        f"<p>The search optimised {wanted} at once. A trial is Pareto-optimal when no other "
        "completed trial is at least as good on every objective and better on one; "
        f"{len(front)} of the {n_done} completed trials are (pruned, stopped and failed trials "
        "are not compared). Each value is the trial's best epoch's (highest validation score: "
        "the epoch its model is). Choose among these trials by what matters to you; any other "
        "trial is beaten by one of them on every objective.</p>"
        + (
            "<p class='note'><code>val_ms_per_megapixel</code>: the model's forward pass on the "
            "validation images, milliseconds per megapixel, on the machine and device the "
            "search ran on, beside whatever else ran there: compare trials of one search, "
            "not machines.</p>"
            if "val_ms_per_megapixel" in objectives
            else ""
        )
        + _img("pareto.png", "Pareto front")
        + _table(table)
    )


def build_report(
    exp_dir: str | Path,
    grid_images: int = 6,
    max_eval_images: int = 24,
    log: Callable[[str], None] = print,
) -> Path:
    """Write ``exp_dir/report/index.html`` and its PNGs; returns the HTML path."""
    from emseg_search.atomic import write_text
    from emseg_search.results.io import (
        load_experiment,
        ranks_by_other_than_iou,
        selection_score,
    )

    t_start = time.perf_counter()
    exp_dir = Path(exp_dir).absolute()
    try:
        exp = load_experiment(exp_dir)
    except FileNotFoundError as exc:
        raise comparison.AnalysisError(str(exc)) from None
    info = exp["experiment"]
    space = info.get("space", {})
    epochs = exp["epochs"]
    # trials rank as the search, best/ and `final` rank them: by the selection score
    # (val_iou, or with val_shifts the robust_weight mix), which every figure follows
    trials = comparison.with_dimensions(exp["trials"], info)
    trials["best_val_score"] = selection_score(trials)
    rank = "best_val_score"
    mixed = ranks_by_other_than_iou(trials)
    label = "val_score" if mixed else "validation IoU"
    curve_metric = "val_score" if mixed else "val_iou"
    metric = str(space.get("metric") or "val_iou")
    out = exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []

    figures.learning_curves_by_arch(
        trials, epochs, out / "learning_curves.png", curve_metric, rank, label
    )
    figures.best_so_far_plot(
        comparison.best_so_far(trials, epochs, rank), out / "best_so_far.png", label
    )
    figures.score_distribution(trials, out / "scores_by_arch.png", rank, label)
    importances, note = comparison.param_importances(
        exp_dir / "optuna.db", "IoU" if metric == "val_iou" else metric
    )
    figures.importance_plot(
        importances,
        note,
        out / "importance.png",
        "the validation IoU" if metric == "val_iou" else metric,
    )

    final = load_final(exp_dir)
    best = comparison.best_per_architecture(trials, rank)
    best = best[best["model_dir"].notna()]
    scored: Scored | None = None
    problem = ""
    try:
        if final is not None:
            scored = _per_image_final(final[1], final[2], exp_dir)
        elif not best.empty:
            scored = _per_image_validation(best, Path(info.get("data", "")), max_eval_images, log)
    except Exception as exc:  # noqa: BLE001 - a moved data folder must not stop the report
        problem = f"{type(exc).__name__}: {exc}"
        log(f"report: no comparison grid ({problem})")
    grid_note = ""
    if scored is not None:
        archs = rank_architectures(scored.per_image)
        archs = [a for a in archs if a in scored.models]
        try:
            rows = grid_rows(scored, archs, grid_images)
            figures.comparison_grid(
                rows, archs, out / "comparison_grid.png", f"{scored.source.capitalize()} images"
            )
            for arch in archs:
                pred = scored.pred_particles.get(arch)
                if pred is not None and scored.true_particles is not None:
                    figures.size_histogram(
                        pred[~pred["touches_border"].astype(bool)],
                        out / f"sizes_{arch}.png",
                        scored.true_particles[
                            ~scored.true_particles["touches_border"].astype(bool)
                        ],
                        title=f"Particle sizes, {arch} vs truth ({scored.source} images)",
                    )
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
            log(f"report: no comparison grid ({problem})")
            scored = None
        grid_note = "" if scored is None else scored.description

    # ---- the page
    n_done = int(trials["best_val_iou"].notna().sum())
    head = (
        f"<h1>Experiment {html.escape(exp_dir.name)}</h1>"
        f"<p>{html.escape(str(space.get('description', '')))}</p>"
        f"<p>{len(trials)} trials ({n_done} scored), data "
        f"<code>{html.escape(str(info.get('data', '?')))}</code>; search split: "
        f"{html.escape(_split_text(info.get('split', {})))}. Report written "
        f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}.</p>"
    )
    sections.append(head)
    if final is not None:
        sections.append(
            "<h2>Held-out test comparison</h2>"
            f"<p>Each architecture's best search configuration, retrained on the search's "
            f"training + validation images with {int(final[2].get('seeds', 0))} seed(s) and "
            f"scored on {html.escape(scored.description if scored else 'the test images')}. "
            "Estimates pool every seed; intervals resample groups (papers for EMPS), not pixels "
            "or images.</p>"
            + _final_table(final[0])
            + _img("final_intervals.png", "test scores with intervals")
        )
        figures.interval_plot(final[0], out / "final_intervals.png")
    else:
        sections.append(
            "<h2>Held-out test comparison</h2><p class='warn'>Not run yet. Everything below is "
            "measured on the validation split that also chose the best trials, so the best "
            "numbers are flattered by that selection. Run <code>python -m emseg_search final "
            f"{html.escape(str(exp_dir))} --test-data DIR</code> for a comparison on held-out "
            "images with intervals, then rebuild this report.</p>"
        )
    robust = robustness_section(exp_dir, out)
    if robust:
        sections.append(robust)
    where = "test" if scored is not None and scored.source == "test" else "validation"
    if scored is not None:
        sections.append(
            f"<h2>Where the models differ ({where} images)</h2>"
            f"<p>{html.escape(grid_note)}. Rows are chosen along the paired per-image IoU "
            "difference between the two best architectures (first wins by most, median, second "
            "wins by most), not the easy ones; titles give that model's per-image IoU and "
            "particle F1 (particles split with the watershed, matched at IoU >= 0.5). Outlines: "
            "<span style='color:#0a0'>green = ground truth</span>, "
            "<span style='color:#c0c'>magenta = predicted</span>.</p>"
            + _img("comparison_grid.png", "comparison grid")
            + "<div class='row'>"
            + "".join(
                _img(f"sizes_{a}.png", f"particle sizes {a}")
                for a in rank_architectures(scored.per_image)
                if (out / f"sizes_{a}.png").is_file()
            )
            + "</div>"
        )
    elif problem:
        sections.append(
            f"<h2>Where the models differ</h2><p class='warn'>No comparison grid: "
            f"{html.escape(problem)}</p>"
        )
    front = pareto_section(trials, space.get("objectives") or {}, out)
    if front:
        sections.append(front)
    boards = comparison.leaderboards(trials, rank, params=True)
    board_html = "".join(
        f"<h3>By {html.escape(comparison.DIMENSIONS.get(by, by.removeprefix('params_')))}</h3>"
        + _table(t.assign(**{by: t[by].map(_param_text)}).rename(columns=_unprefixed))
        for by, t in boards.items()
    )
    from emseg_search.results.io import best_epoch_shift_ious

    top = trials.sort_values(rank, ascending=False, na_position="last").head(15)
    sampled = [
        c for c in top if c.startswith("params_") and _unprefixed(c) not in comparison.DIMENSIONS
    ]
    top = top.assign(**{c: top[c].map(_param_text) for c in sampled})
    top = top.rename(columns={c: _unprefixed(c) for c in sampled})
    cols = [
        "trial_id",
        "status",
        *map(_unprefixed, sampled),
        "arch",
        "encoder",
        "loss",
        "augment",
        "target",
        "best_val_iou",
        "best_val_particle_f1",
        "best_val_robust_iou",
        "best_val_score",
        "pareto",
        "last_val_iou",
        "best_epoch",
        "epochs_run",
        "train_seconds",
    ]
    # a dimension every trial shares says nothing in a row: named once above the table
    same = {
        d: trials[d].iloc[0]
        for d in comparison.DIMENSIONS
        if len(trials) > 1 and d in trials and trials[d].map(_param_text).nunique() == 1
    }
    shown = [
        c
        for c in cols
        if c in top and top[c].notna().any() and c not in same and (mixed or c != rank)
    ]
    shared = (
        "<p class='note'>Every trial: "
        + ", ".join(f"{d} <code>{html.escape(_param_text(v))}</code>" for d, v in same.items())
        + ".</p>"
        if same
        else ""
    )
    sections.append(
        "<h2>The search (validation numbers, flattered by selection)</h2>"
        f"<p class='note'>Trials rank by {_rank_text(mixed)}. best = highest {label} of "
        "any trial of that value; median over its trials; pruned_share = share of its trials "
        "stopped early by ASHA.</p>"
        + board_html
        + "<h3>Best trials</h3>"
        + shared
        + _table(top[shown])
        + _shifts_table(top, best_epoch_shift_ious(trials, epochs))
        + _img("learning_curves.png", "learning curves")
        + _img("best_so_far.png", "best so far")
        + _img("scores_by_arch.png", "scores by architecture")
        + _img("importance.png", "parameter importance")
        + f"<p class='note'>Importance: {html.escape(note)}.</p>"
    )
    started, finished = info.get("started_at"), info.get("finished_at")
    compute = (
        float((epochs["epoch_seconds"].fillna(0) + epochs["val_seconds"].fillna(0)).sum())
        if not epochs.empty
        else 0.0
    )
    budget = {
        "budget": space.get("budget"),
        "scheduler": space.get("scheduler"),
        "resources": space.get("resources"),
        "started_at": started,
        "finished_at": finished,
        "training + validation compute (s, all trials)": round(compute, 1),
        "cluster_resources": info.get("cluster_resources"),
        "max_concurrent_trials": info.get("max_concurrent_trials"),
    }
    import yaml

    sections.append(
        "<h2>Budget, space, versions, hardware</h2>"
        f"<pre>{html.escape(yaml.safe_dump(budget, sort_keys=False))}</pre>"
        "<h3>Library versions and CPU (of the search)</h3>"
        + _table(
            pd.DataFrame(
                sorted((info.get("versions") or {}).items()), columns=["package", "version"]
            )
        )
        + f"<p class='note'>git commit {html.escape(str(info.get('git_commit')))}; report "
        f"built on {html.escape(platform.platform())}.</p>"
        "<h3>Resolved search space</h3>"
        f"<pre>{html.escape(yaml.safe_dump(space, sort_keys=False))}</pre>"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>emseg-search report: {html.escape(exp_dir.name)}</title>"
        f"<style>{CSS}</style></head><body>" + "".join(sections) + "</body></html>\n"
    )
    index = write_text(out / "index.html", page)
    log(f"report: {index} ({time.perf_counter() - t_start:.1f} s)")
    return index
