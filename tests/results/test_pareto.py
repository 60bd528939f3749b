"""Pareto fronts: known answers (ties, duplicates, NaN, directions), trials.parquet rows, and
agreement with Optuna's own front on random points."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from emseg_search.results.pareto import objective_column, pareto_flags, pareto_mask


def test_known_front_all_maximised() -> None:
    values = np.array([[1, 5], [2, 4], [1, 4], [3, 1], [0.5, 0.5]])
    assert pareto_mask(values).tolist() == [True, True, False, True, False]


def test_a_minimised_objective_flips_its_direction() -> None:
    # (IoU: max, count error: min): [0.8, 0.3] is dominated by [0.9, 0.2]
    values = np.array([[0.9, 0.2], [0.8, 0.3], [0.7, 0.1], [0.95, 0.5]])
    assert pareto_mask(values, [True, False]).tolist() == [True, False, True, True]
    assert pareto_mask(values, [True, True]).tolist() == [False, False, False, True]
    assert pareto_mask(values, [False, False]).tolist() == [False, False, True, False]


def test_ties_and_duplicates_stay_on_the_front() -> None:
    """Equal rows do not dominate each other; a row equal on one objective and worse on the
    other is dominated."""
    values = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    assert pareto_mask(values).tolist() == [True, True, False, True]
    assert pareto_mask(np.array([[3.0, 3.0]])).tolist() == [True]
    assert pareto_mask(np.zeros((0, 2))).tolist() == []


def test_nan_rows_are_never_on_the_front_and_dominate_nothing() -> None:
    values = np.array([[np.nan, 9.0], [1.0, 1.0], [0.5, 0.5]])
    assert pareto_mask(values).tolist() == [False, True, False]


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        pareto_mask(np.ones(3))
    with pytest.raises(ValueError, match="1 directions for 2 objectives"):
        pareto_mask(np.ones((2, 2)), [True])


def test_flags_of_trials_rows() -> None:
    """Only completed trials with every objective finite compete; others are False."""
    objectives = {"val_iou": "max", "val_count_error": "min"}
    assert objective_column("val_iou") == "best_val_iou"

    def row(status: str, iou: float | None, count: float | None) -> dict:
        return {"status": status, "best_val_iou": iou, "best_val_count_error": count}

    rows = [
        row("completed", 0.8, 0.3),
        row("completed", 0.7, 0.1),
        row("completed", 0.6, 0.4),  # dominated
        row("pruned", 0.99, 0.0),  # stopped early: not comparable
        row("error", 0.99, 0.0),
        row("running", 0.99, 0.0),
        row("completed", None, 0.0),  # a missing objective
        row("completed", float("inf"), 0.5),  # a broken score
        row("completed", 0.8, 0.3),  # duplicate of the first
    ]
    assert pareto_flags(rows, objectives) == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert pareto_flags(rows, {}) == [None] * len(rows)
    assert pareto_flags([], objectives) == []


@pytest.mark.parametrize("directions", [["maximize", "minimize"], ["minimize"] * 3])
def test_agrees_with_optuna_best_trials(directions: list[str]) -> None:
    """On random points with repeats (ties), the front is Optuna's ``study.best_trials``."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=(60, len(directions))).astype(float)
    study = optuna.create_study(directions=directions)
    for v in values:
        study.add_trial(optuna.trial.create_trial(values=list(v), params={}, distributions={}))
    theirs = sorted(t.number for t in study.best_trials)
    mine = np.flatnonzero(pareto_mask(values, [d == "maximize" for d in directions])).tolist()
    assert mine == theirs
