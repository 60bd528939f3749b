"""What a search measured, as pandas: experiments loaded together, leaderboards by architecture,
encoder, loss and augmentation, best-so-far curves, and parameter importances.

These are validation numbers: the best of N trials is picked on the same split that scores it,
so it is flattered by the selection (`final` measures on held-out images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emseg_search.results.io import load_experiment

# the dimensions a leaderboard can be cut by: column -> label
DIMENSIONS = {
    "arch": "architecture",
    "encoder": "encoder",
    "loss": "loss",
    "augment": "augmentation",
    "target": "target",
}
# a sampled parameter with more values than this gets no leaderboard of its own
MAX_BOARD_VALUES = 12
IMPORTANCE_EVALUATOR = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"


class AnalysisError(ValueError):
    """An experiment cannot be analysed as asked: the message names the folder or file."""


def load_experiments(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Trials of one or several experiments in one frame, with an ``experiment`` column and
    every sampled or fixed dimension (``arch``, ``encoder``, ...) as a plain column."""
    frames = []
    for path in paths:
        path = Path(path)
        try:
            exp = load_experiment(path)
        except FileNotFoundError as exc:
            raise AnalysisError(str(exc)) from None
        frames.append(
            with_dimensions(exp["trials"], exp["experiment"]).assign(experiment=path.name)
        )
    if not frames:
        raise AnalysisError("no experiment given")
    return pd.concat(frames, ignore_index=True)


def with_dimensions(trials: pd.DataFrame, experiment: dict[str, Any]) -> pd.DataFrame:
    """``trials`` plus a column per DIMENSIONS key: the sampled ``params_<name>`` where the
    space samples it, else the space's fixed value (or the TrialConfig default)."""
    from emseg_search.config import TrialConfig

    space = experiment.get("space", {})
    fixed = space.get("fixed", {}) or {}
    out = trials.copy()
    for name in DIMENSIONS:
        column = f"params_{name}"
        if column in out:
            out[name] = out[column]
        else:
            out[name] = fixed.get(name, TrialConfig.model_fields[name].default)
    return out


def leaderboard(trials: pd.DataFrame, by: str, metric: str = "best_val_iou") -> pd.DataFrame:
    """One row per value of ``by`` (a DIMENSIONS key or any column): best and median of
    ``metric``, trials, how many were pruned or failed, and the best trial's id; best first."""
    if by not in trials:
        raise AnalysisError(f"no column {by!r} in the trials; have: {', '.join(trials.columns)}")
    rows = []
    keys = trials[by].map(_hashable)
    for value, group in trials.groupby(keys, dropna=False, sort=False):
        scored = group[metric].dropna()
        best = group.loc[scored.idxmax()] if len(scored) else None
        rows.append(
            {
                by: value,
                "best": float(scored.max()) if len(scored) else math.nan,
                "median": float(scored.median()) if len(scored) else math.nan,
                "trials": len(group),
                "pruned_share": float((group["status"] == "pruned").mean()),
                "errors": int((group["status"] == "error").sum()),
                "best_trial": None if best is None else best["trial_id"],
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("best", ascending=False, na_position="last").reset_index(drop=True)


def leaderboards(
    trials: pd.DataFrame, metric: str = "best_val_iou", params: bool = False
) -> dict[str, pd.DataFrame]:
    """A leaderboard per DIMENSIONS key that takes more than one value in ``trials``; with
    ``params``, also one per other sampled parameter that takes a few values
    (``sampled_params``: a grid's synthetic_mix, a categorical loss weight, ...)."""
    keys = [by for by in DIMENSIONS if by in trials and trials[by].nunique(dropna=False) > 1]
    if params:
        keys += sampled_params(trials)
    return {by: leaderboard(trials, by, metric) for by in keys}


def sampled_params(trials: pd.DataFrame, max_values: int = MAX_BOARD_VALUES) -> list[str]:
    """The ``params_<name>`` columns of a search's sampled parameters other than the
    DIMENSIONS that take 2 to ``max_values`` values, some value in more than one trial (a
    continuous one, e.g. a log-uniform lr, takes one per trial: a leaderboard of it says
    nothing)."""
    out = []
    for column in trials.columns:
        name = column.removeprefix("params_")
        if not column.startswith("params_") or name in DIMENSIONS:
            continue
        n = trials[column].map(_hashable).nunique(dropna=False)
        if 2 <= n <= max_values and n < len(trials):
            out.append(column)
    return out


def _hashable(value: Any) -> Any:
    """A parameter value that pandas can group by (a list-valued one as its text)."""
    return str(value) if isinstance(value, (list, dict, np.ndarray)) else value


def best_per_architecture(trials: pd.DataFrame, metric: str = "best_val_iou") -> pd.DataFrame:
    """The best trial of each architecture (rows of ``trials``), best first."""
    scored = trials.dropna(subset=[metric]).sort_values(metric, ascending=False)
    return scored.drop_duplicates("arch").reset_index(drop=True)


def best_so_far(
    trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = "best_val_iou"
) -> pd.DataFrame:
    """Per trial, in the order trials started (their order in trials.parquet): the best
    ``metric`` so far and the cumulative compute (training + validation seconds of every
    epoch run so far), columns ``trial``, ``trial_id``, ``value``, ``best``, ``compute_s``."""
    seconds = (
        epochs.assign(s=epochs["epoch_seconds"].fillna(0) + epochs["val_seconds"].fillna(0))
        .groupby("trial_id")["s"]
        .sum()
    )
    out = pd.DataFrame(
        {
            "trial": np.arange(1, len(trials) + 1),
            "trial_id": trials["trial_id"].to_numpy(),
            "value": trials[metric].to_numpy(np.float64),
        }
    )
    out["best"] = out["value"].cummax().ffill()  # a trial with no score keeps the best so far
    out["compute_s"] = out["trial_id"].map(seconds).fillna(0.0).cumsum()
    return out


def param_importances(study_db: str | Path, value_name: str = "IoU") -> tuple[pd.DataFrame, str]:
    """Parameter importances from the search's persisted Optuna study (``optuna.db``):
    (frame with ``param`` and ``importance``, a note on which trials and evaluator).

    fANOVA over the trials that ran every epoch; when fewer than 8 did, over every trial with
    a value, a pruned trial counting with its last value (lower-fidelity, and the note says
    so, calling the value ``value_name``: the search's metric).
    Parameters a conditional leaves out of some trials are not scored (Optuna's rule).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState, create_trial

    study_db = Path(study_db)
    empty = pd.DataFrame(columns=["param", "importance"])
    if not study_db.is_file():
        return empty, f"no Optuna study ({study_db.name} missing)"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_db}")
    try:
        summaries = optuna.get_all_study_summaries(storage)
        if not summaries:
            return empty, "the Optuna study is empty"
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()

    # a multi-objective study: the importances of its first objective (t.value would raise)
    def first(t: optuna.trial.FrozenTrial) -> float | None:
        return t.values[0] if t.values else None

    complete = [t for t in trials if t.state == TrialState.COMPLETE and first(t) is not None]
    used, which = complete, f"{len(complete)} trials that ran every epoch"
    if len(complete) < 8:  # a handful of trials says little; pruned ones add evidence
        used = [
            t
            for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and first(t) is not None
        ]
        which = (
            f"{len(used)} trials, pruned ones with their last {value_name} (only "
            f"{len(complete)} ran every epoch)"
        )
    if len(used) < 2:
        return empty, f"too few scored trials for importances ({len(used)})"
    if len(study.directions) > 1:
        which += f"; the first of the study's {len(study.directions)} objectives"
    memo = optuna.create_study(direction=study.directions[0])
    memo.add_trials(
        [
            create_trial(
                params=t.params,
                distributions=t.distributions,
                value=first(t),
                state=TrialState.COMPLETE,
            )
            for t in used
        ]
    )
    try:
        scores = get_param_importances(memo, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as exc:
        return empty, f"importances not computed: {exc}"
    frame = pd.DataFrame({"param": list(scores), "importance": list(scores.values())})
    return frame, f"{IMPORTANCE_EVALUATOR}, over {which}"
