"""Leaderboards, best-so-far and importances on hand-made trials tables and a real Optuna study."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from emseg_search.analysis.comparison import (
    AnalysisError,
    best_per_architecture,
    best_so_far,
    leaderboard,
    leaderboards,
    load_experiments,
    param_importances,
    with_dimensions,
)
from emseg_search.results.io import write_table
from emseg_search.results.schemas import EPOCH_SCHEMA, trial_schema


def trials_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "status": ["completed", "pruned", "completed", "pruned", "error"],
            "best_val_iou": [0.70, 0.50, 0.80, 0.60, None],
            "params_arch": ["unet", "unet", "fpn", "fpn", "unet"],
            "params_loss": ["dice", "dice", "focal", "dice", "focal"],
            "model_dir": ["/m/a", "/m/b", "/m/c", "/m/d", None],
        }
    )


def test_leaderboard_best_median_counts_and_pruned_share() -> None:
    trials = with_dimensions(trials_frame(), {"space": {"fixed": {"encoder": "mobilenet_v2"}}})
    board = leaderboard(trials, "arch")
    assert list(board["arch"]) == ["fpn", "unet"]
    fpn, unet = board.iloc[0], board.iloc[1]
    assert (fpn["best"], fpn["median"], fpn["trials"]) == (0.80, 0.70, 2)
    assert fpn["pruned_share"] == 0.5 and fpn["best_trial"] == "c"
    assert (unet["best"], unet["median"], unet["trials"], unet["errors"]) == (0.70, 0.60, 3, 1)
    assert unet["pruned_share"] == pytest.approx(1 / 3)
    # fixed in the space: one value, no leaderboard; defaults fill what the space never names
    assert set(trials["encoder"]) == {"mobilenet_v2"} and set(trials["augment"]) == {"light"}
    assert set(leaderboards(trials)) == {"arch", "loss"}
    with pytest.raises(AnalysisError, match="no column 'nope'"):
        leaderboard(trials, "nope")


def test_best_per_architecture_and_best_so_far() -> None:
    trials = with_dimensions(trials_frame(), {})
    best = best_per_architecture(trials)
    assert list(zip(best["arch"], best["trial_id"], strict=True)) == [("fpn", "c"), ("unet", "a")]
    epochs = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "c", "d"],
            "epoch_seconds": [10.0, 10.0, 5.0, 20.0, 1.0],
            "val_seconds": [1.0, 1.0, 1.0, 2.0, 0.0],
        }
    )
    curve = best_so_far(trials, epochs)
    assert curve["best"].tolist()[:4] == [0.70, 0.70, 0.80, 0.80]
    assert math.isnan(curve["value"].iloc[4]) and curve["best"].iloc[4] == 0.80
    assert curve["compute_s"].tolist() == [22.0, 28.0, 50.0, 51.0, 51.0]


def test_load_experiments_joins_folders_and_names_a_bad_one(tmp_path: Path) -> None:
    for name in ("one", "two"):
        trials = trials_frame().rename(columns={})
        write_table(
            trials.to_dict("records"),
            trial_schema(["arch", "loss"]),
            tmp_path / name / "trials.parquet",
        )
        write_table([], EPOCH_SCHEMA, tmp_path / name / "epochs.parquet")
    both = load_experiments([tmp_path / "one", tmp_path / "two"])
    assert len(both) == 10 and set(both["experiment"]) == {"one", "two"}
    assert set(both["arch"]) == {"unet", "fpn"}
    with pytest.raises(AnalysisError, match="no trials.parquet"):
        load_experiments([tmp_path / "missing"])


def test_importances_come_from_the_persisted_study(tmp_path: Path) -> None:
    """lr decides the score, batch size does not: fANOVA says so; pruned trials join only when
    fewer than 8 trials completed."""
    db = tmp_path / "optuna.db"
    study = optuna.create_study(
        study_name="s",
        storage=f"sqlite:///{db}",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("batch_size", 2, 16)
        return -abs(math.log10(lr) + 2.5)

    study.optimize(objective, n_trials=24)
    frame, note = param_importances(db)
    assert frame.iloc[0]["param"] == "lr" and frame.iloc[0]["importance"] > 0.8
    assert "fANOVA" in note and "24 trials that ran every epoch" in note

    few = optuna.create_study(study_name="f", storage=f"sqlite:///{tmp_path / 'few.db'}")
    for i in range(4):
        t = few.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        if i < 2:
            few.tell(t, float(i))
        else:
            t.report(0.1 * i, step=0)
            few.tell(t, state=optuna.trial.TrialState.PRUNED)
    frame, note = param_importances(tmp_path / "few.db")
    assert "4 trials, pruned ones with their last IoU" in note
    empty, why = param_importances(tmp_path / "absent.db")
    assert empty.empty and "missing" in why

    # a multi-objective study (objectives: in the space): the first objective's importances
    multi = optuna.create_study(
        study_name="m",
        storage=f"sqlite:///{tmp_path / 'multi.db'}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    multi.optimize(lambda t: (objective(t), 1.0), n_trials=12)
    frame, note = param_importances(tmp_path / "multi.db")
    assert frame.iloc[0]["param"] == "lr" and "the first of the study's 2 objectives" in note
