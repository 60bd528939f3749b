"""What the dashboard shows, as pandas: the experiments under a results folder, each one's
tables read through a cache that rereads a file only when its size or mtime changed, and the
frames behind the charts (leaderboard, best so far, Pareto front, importances).

Read-only: nothing here writes under the results folder, and every path it opens is checked to
lie inside it (``resolve_inside``).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.results.io import is_stale, ranks_by_other_than_iou, read_table
from emseg_search.results.pareto import objective_column
from emseg_search.results.schemas import EPOCH_SCHEMA, OBJECTIVES, TRIAL_COLUMNS

# the dimensions the leaderboard filters by: column -> label
DIMENSIONS = {"arch": "architecture", "encoder": "encoder", "loss": "loss", "augment": "augment"}
# the tables the live page watches (relative to an experiment's folder)
ROBUSTNESS_ROWS = "final/robustness.parquet"  # `final --shifts`: every run x shift x image
ROBUSTNESS_SUMMARY = "final/robustness_summary.parquet"  # per architecture x shift, intervals
TABLES = (
    "trials.parquet",
    "epochs.parquet",
    "experiment.json",
    "final.parquet",
    "config.yaml",
    ROBUSTNESS_SUMMARY,
)
# scores that may sit beside pixel IoU: column -> label (shown where a table has values)
EXTRA_SCORES = {
    "best_val_robust_iou": "robust IoU",
    "best_val_score": "selection score",
    "best_val_particle_f1": "particle F1",
    "last_val_particle_f1": "particle F1 · last epoch",
    "best_val_panoptic_quality": "panoptic quality",
    "best_val_count_error": "count error",
    "best_val_ms_per_megapixel": "ms per megapixel",
}
# extra scores that are better low, and those that are not objectives of their own
MINIMISE = {objective_column(m) for m, better in OBJECTIVES.items() if better == "min"}
NOT_OBJECTIVES = {"best_val_score", "last_val_particle_f1"}
# fANOVA (what the report uses) up to this many trials; Optuna's PED-ANOVA above (fast)
FANOVA_MAX_TRIALS = 100


class ResultsError(ValueError):
    """A results folder or table the dashboard cannot show: the message says which and why."""


class NotStarted(ResultsError):
    """An experiment that has no trials table yet (its search has not finished an epoch)."""


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, or ResultsError when it would leave ``root`` (``..``,
    an absolute path, a symlink out)."""
    root = root.resolve()
    if not relative or "\x00" in relative or Path(relative).is_absolute():
        raise ResultsError(f"{relative!r}: not a path inside the results folder")
    if any(part == ".." for part in Path(relative).parts):
        raise ResultsError(f"{relative!r}: '..' is not allowed")
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ResultsError(f"{relative!r}: outside the results folder")
    return path


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, None when it is missing: what says it changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class TableCache:
    """Parsed tables keyed by path; a file is reread (with the consistent-snapshot reader)
    only when its (mtime, size, inode) changed since the last read, and by one thread at a time
    (the page's callbacks ask for the same tables at once)."""

    _entries: dict[Path, tuple[Any, Any]] = field(default_factory=dict)
    _locks: dict[Path, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # experiment folder -> (the parsed tables it was derived from, the Experiment)
    experiments: dict[Path, tuple[tuple[Any, ...], Experiment]] = field(default_factory=dict)
    reads: int = 0  # files actually read (tests check that an unchanged poll reads none)

    def get(self, path: Path) -> Any:
        """The parsed content of ``path`` (DataFrame for .parquet, dict for .json); None when
        missing. Raises ResultsError when it cannot be parsed (and does not retry until the
        file changes)."""
        key = _stat_key(path)
        with self._lock:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            cached = self._entries.get(path)
            if cached is not None and cached[0] == key:
                value = cached[1]
            else:
                try:
                    value = None if key is None else _parse(path)
                except ResultsError as exc:
                    value = exc
                self.reads += key is not None
                self._entries[path] = (key, value)
        if isinstance(value, ResultsError):
            raise ResultsError(str(value))
        return value


def _parse(path: Path) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        if path.suffix == ".yaml":
            import yaml

            return yaml.safe_load(path.read_text(encoding="utf-8"))
        return read_table(path).to_pandas()
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file: say which, never a traceback
        raise ResultsError(
            f"{path.parent.name}/{path.name} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it may be corrupt"
        ) from None


def signature(root: Path, names: list[str] | None = None) -> str:
    """A short string that changes whenever a table of the given experiments (all when None)
    changes: cheap stat() calls, no reads. The live page polls it."""
    root = Path(root)
    if names is None:
        names = [p.name for p in list_experiment_dirs(root)]
    parts = []
    for name in names:
        for table in TABLES:
            parts.append(f"{name}/{table}:{_stat_key(root / name / table)}")
    return str(hash("|".join(parts)))


def list_experiment_dirs(root: Path) -> list[Path]:
    """The searches under ``root`` (folders holding trials.parquet or experiment.json: a
    search that has not finished a trial yet has only the latter) and the single training
    runs (`train`: epochs.parquet and config.yaml), shown as one-trial experiments."""
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and ((p / "trials.parquet").is_file() or (p / "experiment.json").is_file() or is_run(p))
    )


def is_run(path: Path) -> bool:
    """Whether ``path`` is one `train` run (not a search)."""
    return (
        (path / "epochs.parquet").is_file()
        and (path / "config.yaml").is_file()
        and not (path / "trials.parquet").is_file()
        and not (path / "experiment.json").is_file()
    )


def experiment_dir(root: Path, name: str) -> Path:
    """The folder of experiment ``name`` (a direct child of ``root``), else ResultsError."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ResultsError(f"{name!r} is not an experiment name")
    path = resolve_inside(root, name)
    if path not in {p.resolve() for p in list_experiment_dirs(root)}:
        raise ResultsError(f"no experiment {name!r} in {root}")
    return path


@dataclass(frozen=True)
class Experiment:
    """One experiment's tables as the dashboard uses them."""

    name: str
    path: Path
    trials: pd.DataFrame  # TRIAL_COLUMNS (missing ones added as null) + params_* + dimensions
    epochs: pd.DataFrame
    info: dict[str, Any]  # experiment.json
    final: pd.DataFrame | None
    warnings: tuple[str, ...]
    # `final --shifts`' summary per architecture x shift (FINAL_ROBUSTNESS_SUMMARY_SCHEMA)
    robustness: pd.DataFrame | None = None

    @property
    def params(self) -> list[str]:
        """The sampled parameters' names, in the table's order."""
        return [c[len("params_") :] for c in self.trials.columns if c.startswith("params_")]


def load(root: Path, name: str, cache: TableCache) -> Experiment:
    """Experiment ``name`` under ``root`` from the cache; ResultsError when it cannot be
    shown at all, warnings for what is missing but not fatal (a half-written experiment)."""
    path = experiment_dir(root, name)
    if is_run(path):
        return _load_run(path, name, cache)
    warnings = []
    info = cache.get(path / "experiment.json")
    if info is None:
        warnings.append("experiment.json is missing: no search settings to show")
        info = {}
    elif not isinstance(info, dict):
        raise ResultsError(f"{name}/experiment.json is not a JSON object")
    trials = cache.get(path / "trials.parquet")
    if trials is None:
        raise NotStarted(
            f"{name}: no trials.parquet yet; the search has not finished an epoch "
            "(this page updates by itself when it does)"
        )
    missing = [c for c in ("trial_id", "status") if c not in trials]
    if missing:
        raise ResultsError(f"{name}/trials.parquet has no column {', '.join(missing)}")
    epochs = cache.get(path / "epochs.parquet")
    if epochs is None:
        warnings.append("epochs.parquet is missing: no learning curves yet")
        epochs = pd.DataFrame({c: pd.Series(dtype=float) for c in EPOCH_SCHEMA.names})
    final = None
    try:
        final = cache.get(path / "final.parquet")
    except ResultsError as exc:
        warnings.append(str(exc))
    robustness = _robustness_summary(path, cache, warnings)
    sources = (info, trials, epochs, final, robustness, tuple(warnings))
    with cache._lock:
        known = cache.experiments.get(path)
    if (
        known is not None
        and all(a is b for a, b in zip(known[0][:5], sources[:5], strict=True))
        and known[0][5] == sources[5]  # the same warnings (a stale summary is one)
    ):
        return known[1]  # the same tables as last time: the same derived frames
    exp = Experiment(
        name=name,
        path=path,
        trials=_with_dimensions(trials, info),
        epochs=epochs,
        info=info,
        final=final,
        warnings=tuple(warnings),
        robustness=robustness,
    )
    with cache._lock:
        cache.experiments[path] = (sources, exp)
    return exp


def _robustness_summary(path: Path, cache: TableCache, warnings: list[str]) -> pd.DataFrame | None:
    """final/robustness_summary.parquet (None without `final --shifts`); a warning when the
    rows are newer than their summary, or the summary is missing (the dashboard only reads:
    the bootstrap behind the intervals runs in `final` and `report`)."""
    rows, summary = path / ROBUSTNESS_ROWS, path / ROBUSTNESS_SUMMARY
    if is_stale(summary, rows):
        warnings.append(
            f"{ROBUSTNESS_SUMMARY} is {'older than' if summary.is_file() else 'missing beside'} "
            f"{ROBUSTNESS_ROWS}: run `python -m emseg_search.report {path}` to summarise the "
            "robustness rows"
        )
    try:
        return cache.get(summary)
    except ResultsError as exc:
        warnings.append(str(exc))
        return None


RUNNING_WITHIN_S = 600  # a run whose epochs.parquet changed this recently is running


def _load_run(path: Path, name: str, cache: TableCache) -> Experiment:
    """A `train` run as a one-trial experiment: the trial's row derived from its epochs
    (best epoch by val_score, else val_iou) and its config.yaml."""
    config = cache.get(path / "config.yaml")
    if not isinstance(config, dict):
        raise ResultsError(f"{name}/config.yaml is not a mapping")
    epochs = cache.get(path / "epochs.parquet")
    if epochs is None or not len(epochs):
        raise NotStarted(f"{name}: no epoch reported yet (this page updates by itself)")
    epochs = epochs.assign(trial_id=name).sort_values("epoch").reset_index(drop=True)
    ranking = epochs["val_score"] if "val_score" in epochs else epochs["val_iou"]
    ranking = ranking.astype(float).fillna(epochs["val_iou"].astype(float))
    best = epochs.loc[ranking.idxmax()] if ranking.notna().any() else epochs.iloc[-1]
    last = epochs.iloc[-1]

    def at(row: pd.Series, column: str) -> Any:
        """``row[column]``, None where an older table lacks the column."""
        return row[column] if column in row.index else None

    if len(epochs) >= int(config.get("epochs") or 0):
        status = "completed"
    else:
        age = datetime.now(timezone.utc).timestamp() - (path / "epochs.parquet").stat().st_mtime
        status = "running" if age < RUNNING_WITHIN_S else "stopped"
    row = {
        "trial_id": name,
        "status": status,
        "best_val_iou": at(best, "val_iou"),
        "last_val_iou": at(last, "val_iou"),
        "best_val_dice": at(best, "val_dice"),
        "best_val_score": at(best, "val_score"),
        "best_val_robust_iou": at(best, "val_robust_iou"),
        "best_val_particle_f1": at(best, "val_particle_f1"),
        "last_val_particle_f1": at(last, "val_particle_f1"),
        "best_val_panoptic_quality": at(best, "val_panoptic_quality"),
        "best_val_count_error": at(best, "val_count_error"),
        "best_epoch": int(best["epoch"]),
        "epochs_run": len(epochs),
        "train_seconds": float(epochs["epoch_seconds"].astype(float).sum()),
        "error": None,
        "model_dir": str(path / "model") if (path / "model").is_dir() else None,
        **{f"params_{k}": config.get(k) for k in (*DIMENSIONS, "lr", "weight_decay")},
    }
    trials = pd.DataFrame([row])
    info = {
        "kind": "run",
        "data": config.get("data"),
        "space": {
            "description": "one training run (`train`), shown as a one-trial experiment",
            "budget": {"num_samples": 1},
        },
    }
    return Experiment(
        name=name,
        path=path,
        trials=_with_dimensions(trials, info),
        epochs=epochs,
        info=info,
        final=None,
        warnings=(),
    )


def _with_dimensions(trials: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    """The trials with every TRIAL_COLUMNS column (null where an older table lacks it), a
    column per DIMENSIONS key (sampled, else the space's fixed value) and ``order`` (1 = the
    first trial started)."""
    out = trials.copy()
    for column in TRIAL_COLUMNS:
        if column not in out:
            out[column] = np.nan
    fixed = (info.get("space") or {}).get("fixed") or {}
    for name in DIMENSIONS:
        column = f"params_{name}"
        out[name] = out[column] if column in out else fixed.get(name)
    out["order"] = np.arange(1, len(out) + 1)
    out["score"] = score(out)
    return out


def score(trials: pd.DataFrame) -> pd.Series:
    """What ranks trials: best_val_score where present, else best_val_iou."""
    iou = pd.to_numeric(trials["best_val_iou"], errors="coerce").astype(float)
    if "best_val_score" not in trials:
        return iou
    return pd.to_numeric(trials["best_val_score"], errors="coerce").astype(float).fillna(iou)


def is_categorical(column: pd.Series) -> bool:
    """Whether a parameter column holds categories (strings, booleans), not numbers."""
    return pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column)


def filter_trials(trials: pd.DataFrame, filters: dict[str, list[str] | None]) -> pd.DataFrame:
    """The trials whose column value is in each non-empty filter list (column -> values)."""
    mask = np.ones(len(trials), bool)
    for column, values in filters.items():
        if values and column in trials:
            mask &= trials[column].astype(str).isin([str(v) for v in values]).to_numpy()
    return trials[mask]


def extra_scores(trials: pd.DataFrame) -> dict[str, str]:
    """EXTRA_SCORES columns that hold at least one value (and differ from IoU, for the
    selection score)."""
    out = {}
    for column, label in EXTRA_SCORES.items():
        if column not in trials or trials[column].isna().all():
            continue
        if column == "best_val_score" and not ranks_by_other_than_iou(trials):
            continue
        out[column] = label
    return out


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def summary(root: Path, name: str, cache: TableCache) -> dict[str, Any]:
    """One row of the experiments list: name, status, trials done/total, best IoU, started,
    wall time, and a message when the experiment cannot be read."""
    row: dict[str, Any] = {"experiment": name, "status": "", "trials": "", "best_iou": None}
    try:
        exp = load(root, name, cache)
    except ResultsError as exc:
        info = {}
        with contextlib.suppress(ResultsError):
            info = cache.get(root / name / "experiment.json") or {}
        row.update(status="starting" if isinstance(exc, NotStarted) else "unreadable")
        row.update(_times(info, None), message=str(exc))
        return row
    t = exp.trials
    total = ((exp.info.get("space") or {}).get("budget") or {}).get("num_samples")
    done = int((t["status"] != "running").sum())
    running = int((t["status"] == "running").sum())
    run = exp.info.get("kind") == "run"
    if exp.info.get("finished_at") or (run and t["status"].iloc[0] == "completed"):
        status = "finished"
    elif running:
        status = f"running ({running})"
    else:
        status = "stopped"
    last_write = max((_stat_key(exp.path / "trials.parquet") or (0,))[0] / 1e9, 0)
    best = t["best_val_iou"].astype(float).max()
    row.update(
        status=status,
        trials=f"{done}/{total}" if total else f"{done}/{len(t)}",
        best_iou=None if math.isnan(best) else round(float(best), 4),
        message="; ".join(exp.warnings) or ("a single training run (`train`)" if run else ""),
    )
    row.update(_times(exp.info, last_write))
    if run:  # no start time recorded: the time its epochs took
        e = exp.epochs
        seconds = e["epoch_seconds"].astype(float).sum()
        if "val_seconds" in e:
            seconds += e["val_seconds"].astype(float).fillna(0).sum()
        row["wall_time"] = format_seconds(float(seconds))
    return row


def _times(info: dict[str, Any], last_write: float | None) -> dict[str, Any]:
    started = _iso(info.get("started_at"))
    finished = _iso(info.get("finished_at"))
    end = finished
    if end is None and last_write:
        end = datetime.fromtimestamp(last_write, timezone.utc)
    wall = (end - started).total_seconds() if started and end else None
    return {
        "started": started.strftime("%Y-%m-%d %H:%M") if started else "",
        "wall_time": format_seconds(wall) if wall is not None and wall >= 0 else "",
    }


def format_seconds(seconds: float) -> str:
    """3725 -> '1 h 02 min', 95 -> '1 min 35 s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def best_so_far(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per trial in start order: its score, the best so far, and the cumulative compute
    (training + validation seconds of every epoch so far): columns ``order``, ``trial_id``,
    ``value``, ``best``, ``compute_s``."""
    seconds = pd.Series(dtype=float)
    if len(epochs):
        s = epochs["epoch_seconds"].astype(float).fillna(0)
        if "val_seconds" in epochs:
            s = s + epochs["val_seconds"].astype(float).fillna(0)
        seconds = s.groupby(epochs["trial_id"]).sum()
    out = pd.DataFrame(
        {
            "order": trials["order"].to_numpy(),
            "trial_id": trials["trial_id"].to_numpy(),
            "value": trials["score"].to_numpy(np.float64),
        }
    )
    out["best"] = out["value"].cummax().ffill()
    out["compute_s"] = out["trial_id"].map(seconds).fillna(0.0).astype(float).cumsum()
    return out


def declared_objectives(info: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The search's own objectives (experiment.json's ``space.objectives``), as (column,
    label, maximise); [] for a single-objective search."""
    declared = (info.get("space") or {}).get("objectives") or {}
    if not isinstance(declared, dict):
        return []
    labels = {"best_val_iou": "val IoU", "best_val_dice": "val Dice", **EXTRA_SCORES}
    out = []
    for metric, better in declared.items():
        column = objective_column(str(metric))
        out.append((column, f"{labels.get(column, metric)} (best epoch)", better == "max"))
    return out


def objectives(
    trials: pd.DataFrame, declared: list[tuple[str, str, bool]] | None = None
) -> list[tuple[str, str, bool]]:
    """The objectives a Pareto front is drawn over, as (column, label, maximise): the search's
    ``declared`` objectives first, then pixel IoU and every extra score with values
    (robustness, particle scores, speed). One objective: no front."""
    found = list(declared or [])
    candidates = [("best_val_iou", "val IoU (best epoch)", True)]
    for column, label in extra_scores(trials).items():
        if column not in NOT_OBJECTIVES:
            candidates.append((column, f"{label} (best epoch)", column not in MINIMISE))
    seen = {c for c, _, _ in found}
    return found + [o for o in candidates if o[0] not in seen]


def importances(exp: Experiment) -> tuple[pd.DataFrame, str]:
    """Parameter importances for the score over the finished trials, by Optuna's evaluators
    on an in-memory study built from trials.parquet: (frame ``param``, ``importance``; a note).

    fANOVA (as the report) up to FANOVA_MAX_TRIALS trials; above, PED-ANOVA, which takes
    0.2 s for 1,000 trials where fANOVA takes 20 s on a 2-core machine."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )
    from optuna.trial import TrialState, create_trial

    empty = pd.DataFrame({"param": [], "importance": []})
    t = exp.trials[exp.trials["status"] != "running"].dropna(subset=["score"])
    spec = ((exp.info.get("space") or {}).get("parameters")) or {}
    dists: dict[str, Any] = {}
    for name in exp.params:
        col = t[f"params_{name}"].dropna()
        if col.nunique() < 2:
            continue
        if is_categorical(col):
            dists[name] = CategoricalDistribution(sorted(col.astype(str).unique()))
        elif pd.api.types.is_integer_dtype(col):
            dists[name] = IntDistribution(int(col.min()), int(col.max()))
        else:
            log = bool((spec.get(name) or {}).get("log")) and col.min() > 0
            dists[name] = FloatDistribution(float(col.min()), float(col.max()), log=log)
    if len(t) < 4 or not dists:
        return empty, f"too few finished trials with varied parameters ({len(t)}) for importances"
    made = []
    columns = {name: t[f"params_{name}"].tolist() for name in dists}
    for i, value in enumerate(t["score"].astype(float)):
        params: dict[str, Any] = {}
        for name, dist in dists.items():
            v = columns[name][i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue  # a conditional left it out of this trial
            if isinstance(dist, CategoricalDistribution):
                params[name] = str(v)
            else:
                params[name] = int(v) if isinstance(dist, IntDistribution) else float(v)
        made.append(
            create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=value,
                state=TrialState.COMPLETE,
            )
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(made)
    if len(t) <= FANOVA_MAX_TRIALS:
        evaluator, method = FanovaImportanceEvaluator(seed=0), "fANOVA (seed 0)"
    else:
        evaluator, method = PedAnovaImportanceEvaluator(), "PED-ANOVA (top 10 % vs all)"
    try:
        scores = get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:
        return empty, f"importances not computed: {exc}"
    frame = pd.DataFrame({"param": list(scores), "importance": list(scores.values())})
    return frame, (
        f"Optuna's {method} over {len(t)} finished trials (pruned ones with their best IoU)"
    )


def trial_files(exp: Experiment, trial_id: str) -> dict[str, list[str]]:
    """Paths (relative to the experiment) of a trial's checkpoints, model artifact and
    resolved config, and of the report's prediction panels."""
    run = exp.info.get("kind") == "run"
    folder = exp.path if run else exp.path / "trials" / trial_id
    out: dict[str, list[str]] = {"checkpoints": [], "model": [], "config": [], "panels": []}
    arch = ""
    row = exp.trials[exp.trials["trial_id"] == trial_id]
    if len(row):
        arch = str(row.iloc[0]["arch"])
    if folder.is_dir() and folder.resolve().is_relative_to(exp.path.resolve()):
        out["checkpoints"] = sorted(
            p.relative_to(exp.path).as_posix()
            for p in folder.glob("ray/checkpoint_*" if run else "checkpoint_*")
            if p.is_dir()
        )
        if (folder / "model").is_dir():
            out["model"] = [(folder / "model").relative_to(exp.path).as_posix()]
        if (folder / "model" / "config.yaml").is_file():
            out["config"] = [(folder / "model" / "config.yaml").relative_to(exp.path).as_posix()]
    report = exp.path / "report"
    if (report / "index.html").is_file():
        out["panels"] = sorted(
            p.relative_to(exp.path).as_posix()
            for p in report.glob("*.png")
            if p.stem == "comparison_grid" or p.stem in (f"sizes_{arch}", f"robustness_{arch}")
        )
    return out


def resolved_config(exp: Experiment, trial_id: str) -> dict[str, Any]:
    """The trial's resolved TrialConfig (its model's config.yaml), else the space's fixed
    values with the trial's sampled ones."""
    if exp.info.get("kind") == "run":
        path = exp.path / "config.yaml"
    else:
        path = exp.path / "trials" / trial_id / "model" / "config.yaml"
    if path.is_file() and path.resolve().is_relative_to(exp.path.resolve()):
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                return loaded
        except (OSError, yaml.YAMLError):
            pass
    row = exp.trials[exp.trials["trial_id"] == trial_id]
    config = dict(((exp.info.get("space") or {}).get("fixed")) or {})
    if len(row):
        for name in exp.params:
            v = row.iloc[0][f"params_{name}"]
            if not (v is None or (isinstance(v, float) and math.isnan(v))):
                config[name] = v.item() if hasattr(v, "item") else v
    return config
