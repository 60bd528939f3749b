"""The searcher, budget and stopper glue: Optuna's view of pruned trials, the study export,
the Ray internals PruningOptunaSearch relies on, and budgets a --resume may extend."""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from pathlib import Path

import optuna
import pytest
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from emseg_search.search.algorithms import (
    OPTUNA_SEARCH_PRIVATE,
    BudgetedSearch,
    EpochASHA,
    PruningOptunaSearch,
    TimeBudget,
    build_scheduler,
    build_search,
    settle_study_export,
    with_epochs_trained,
)
from emseg_search.space.spec import space_from_dict

SPACE = space_from_dict(
    {
        "name": "t",
        "budget": {"num_samples": 3, "time_budget_s": 60},
        "scheduler": {"type": "asha", "max_epochs": 4},
        "fixed": {"tile_size": 64},
        "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    }
)


def searcher(tmp_path: Path) -> PruningOptunaSearch:
    search = build_search(SPACE, tmp_path, max_concurrent=2)
    assert isinstance(search, BudgetedSearch) and isinstance(search.searcher, ConcurrencyLimiter)
    return search.searcher.searcher


def test_ray_still_has_the_optuna_search_internals_we_read() -> None:
    """Fails loudly when a Ray upgrade renames what PruningOptunaSearch reads (no public API
    gives the Optuna trial of a Tune trial): pin Ray below that version or adapt the class."""

    def space(trial: optuna.Trial) -> None:
        trial.suggest_float("x", 0, 1)

    plain = OptunaSearch(space=space, metric="m", mode="max")
    missing = [name for name in OPTUNA_SEARCH_PRIVATE if not hasattr(plain, name)]
    assert not missing, f"ray's OptunaSearch lost {missing}"
    plain.suggest("a")
    assert isinstance(plain._ot_trials["a"], optuna.trial.Trial)
    plain.on_trial_complete("a", {"m": 0.5, "training_iteration": 1})
    assert plain._completed_trials == {"a"}


def test_pruned_and_completed_trials_reach_optuna_and_its_export(tmp_path: Path) -> None:
    search = searcher(tmp_path)
    for trial_id in ("short", "full"):
        assert "lr" in search.suggest(trial_id)
        for step in range(1, 5 if trial_id == "full" else 2):
            search.on_trial_result(trial_id, {"val_iou": 0.1 * step, "training_iteration": step})
    search.on_trial_complete("short", {"val_iou": 0.1, "training_iteration": 1})
    search.on_trial_complete("full", {"val_iou": 0.4, "training_iteration": 4})
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in study.trials}
    assert states == {"short": "PRUNED", "full": "COMPLETE"}
    assert not list(tmp_path.glob(".optuna.db*"))  # the temporary file was renamed


def test_a_retried_trial_that_trained_every_epoch_is_complete_not_pruned(tmp_path: Path) -> None:
    """A trial killed after epoch 0 and retried from its checkpoint reports epochs 1..3 with
    Tune's count starting again at 1: Optuna and ASHA go by the epochs trained (tests/faults)."""
    search = searcher(tmp_path)
    search.suggest("a")
    search.on_trial_result("a", {"val_iou": 0.1, "epoch": 0, "training_iteration": 1})
    for epoch in (1, 2, 3):  # the retry
        result = {"val_iou": 0.1 * (epoch + 1), "epoch": epoch, "training_iteration": epoch}
        search.on_trial_result("a", result)
    search.on_trial_complete("a", result)
    (trial,) = search.study().trials
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.4)
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
    asha = build_scheduler(SPACE)
    assert isinstance(asha, EpochASHA)
    assert with_epochs_trained(result)["training_iteration"] == 4
    assert with_epochs_trained({"training_iteration": 2}) == {"training_iteration": 2}


def test_a_restored_searcher_keeps_one_study(tmp_path: Path) -> None:
    """Tune snapshots the searcher by pickling it: the restored one must still see, tell and
    export the study the trials so far went into."""
    search = searcher(tmp_path)
    search.suggest("a")
    search.on_trial_result("a", {"val_iou": 0.2, "training_iteration": 1})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = PruningOptunaSearch.__new__(PruningOptunaSearch)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"val_iou": 0.2, "training_iteration": 1})
    restored.suggest("b")
    assert [t.state.name for t in restored.study().trials] == ["PRUNED", "RUNNING"]
    restored.export()
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.user_attrs["tune_trial_id"] for t in study.trials] == ["a", "b"]


def write_budget(tmp_path: Path, **budget: object) -> Path:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"space": {"budget": budget}}))
    return path


def test_a_restored_search_takes_the_raised_trial_budget(tmp_path: Path) -> None:
    search = build_search(SPACE, tmp_path, max_concurrent=1)
    saved = {"counter": 3, "total_samples": 3, "finished": False, "experiment": None}
    write_budget(tmp_path, num_samples=5)
    search.set_state(saved)
    assert search.total_samples == 5 and not search.is_finished()
    write_budget(tmp_path, num_samples=2)  # never below what Tune already planned
    search.set_state(saved)
    assert search.total_samples == 3 and search.is_finished()


def test_time_budget_is_read_at_the_first_check_and_again_after_a_restore(tmp_path: Path) -> None:
    path = write_budget(tmp_path, num_samples=3, time_budget_s=0.2)
    stopper = TimeBudget(str(path))
    assert not stopper.stop_all() and not stopper("t", {})
    time.sleep(0.3)
    assert stopper.stop_all()
    write_budget(tmp_path, num_samples=3, time_budget_s=None)  # --resume removed the budget
    restored = pickle.loads(pickle.dumps(stopper))
    time.sleep(0.3)
    assert not restored.stop_all()


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"space": {}})])
def test_an_unreadable_budget_changes_nothing(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "experiment.json"
    if content is not None:
        path.write_text(content)
    assert not TimeBudget(str(path)).stop_all()
    search = build_search(SPACE, tmp_path, max_concurrent=1)
    search.set_state({"counter": 0, "total_samples": 3, "finished": False, "experiment": None})
    assert search.total_samples == 3


def test_study_export_shows_every_trial_and_settles_those_the_search_cut(tmp_path: Path) -> None:
    """optuna.db: each trial names its Tune trial; a trial still running when Tune last
    snapshots the searcher (time budget ran out) is in the file, and after the search it is
    PRUNED with its last reported IoU, not left RUNNING (or missing, as before)."""
    space = SPACE
    db = tmp_path / "optuna.db"
    searcher = build_search(space, tmp_path, max_concurrent=1).searcher.searcher
    searcher.suggest("done")
    searcher.on_trial_result("done", {"val_iou": 0.6, "training_iteration": 1})
    searcher.on_trial_complete("done", {"val_iou": 0.7, "training_iteration": 4})
    searcher.suggest("cut")  # asked after the last export by on_trial_complete
    for epoch, iou in ((1, 0.4), (2, 0.55)):
        searcher.on_trial_result("cut", {"val_iou": iou, "training_iteration": epoch})
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's final snapshot
    mtime = db.stat().st_mtime_ns
    searcher.save(str(tmp_path / "searcher.pkl"))  # nothing changed: not exported again
    assert db.stat().st_mtime_ns == mtime

    def load() -> dict[str, optuna.trial.FrozenTrial]:
        study = optuna.load_study(study_name=space.name, storage=f"sqlite:///{db}")
        return {t.user_attrs["tune_trial_id"]: t for t in study.trials}

    trials = load()
    assert trials["done"].state == optuna.trial.TrialState.COMPLETE
    assert trials["cut"].state == optuna.trial.TrialState.RUNNING
    assert settle_study_export(db) == 1
    trials = load()
    assert trials["cut"].state == optuna.trial.TrialState.PRUNED
    assert trials["cut"].value == pytest.approx(0.55)
    assert settle_study_export(db) == 0
    assert settle_study_export(tmp_path / "missing.db") == 0


MULTI = space_from_dict(
    {
        **SPACE.to_dict(),
        "objectives": {"val_iou": "max", "val_count_error": "min"},
        "searcher": {"type": "nsga2", "seed": 0, "population_size": 4},
    }
)


def test_several_objectives_tell_optuna_the_best_epoch(tmp_path: Path) -> None:
    """A multi-objective study: a completed trial's values are those of its best epoch (by
    val_score, as trials.parquet's best_* columns), a stopped one is PRUNED, a diverged one
    FAIL; the exported study's Pareto front follows."""
    search = build_search(MULTI, tmp_path, max_concurrent=2).searcher.searcher
    assert isinstance(search._study_sampler, optuna.samplers.NSGAIISampler)
    epochs = {  # (val_score, val_iou, val_count_error) per epoch
        "last": [(0.1, 0.1, 0.9), (0.2, 0.2, 0.9), (0.3, 0.3, 0.9), (0.99, 0.99, 0.35)],
        "good": [(0.5, 0.5, 0.4), (0.7, 0.7, 0.3), (0.6, 0.6, 0.1), (0.65, 0.65, 0.2)],
        "few": [(0.9, 0.9, 0.5), (0.8, 0.8, 0.6), (0.7, 0.7, 0.1), (0.9, 0.9, 0.0)],
        "short": [(0.95, 0.95, 0.0)],
        "nan": [(0.2, 0.2, 0.1)] * 3 + [(float("nan"), 0.0, float("nan"))],
    }
    for trial_id, rows in epochs.items():
        search.suggest(trial_id)
        for step, (score, iou, count) in enumerate(rows, 1):
            result = {"val_score": score, "val_iou": iou, "val_count_error": count}
            if step < len(rows):  # Tune hands the last result to on_trial_complete only
                search.on_trial_result(trial_id, {**result, "training_iteration": step})
        last = {**result, "training_iteration": len(rows), "diverged": trial_id == "nan"}
        search.on_trial_complete(trial_id, last)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    got = {t.user_attrs["tune_trial_id"]: (t.state.name, t.values) for t in study.trials}
    assert got == {
        "last": ("COMPLETE", [0.99, 0.35]),  # its best epoch is the one that ended it
        "good": ("COMPLETE", [0.7, 0.3]),
        "few": ("COMPLETE", [0.9, 0.5]),  # its first best epoch; the tie later does not count
        "short": ("PRUNED", None),
        "nan": ("FAIL", None),
    }
    assert {t.user_attrs["tune_trial_id"] for t in study.best_trials} == {"last", "good"}


GRID = space_from_dict(
    {
        "name": "g",
        "budget": {"num_samples": 4},
        "scheduler": {"type": "asha", "max_epochs": 4},
        "searcher": {"type": "grid", "seed": 3},
        "fixed": {"tile_size": 64},
        "parameters": {
            "augment": {"type": "categorical", "choices": ["em", "robust"]},
            "synthetic_mix": {"type": "categorical", "choices": [0.0, 0.5]},
        },
    }
)


def test_a_grid_search_runs_every_combination_once_across_a_restore(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """searcher type grid: two trials at once, one stopped early, the searcher snapshotted and
    restored as Tune does on --resume; the four trials still cover the four combinations."""
    search = build_search(GRID, tmp_path, max_concurrent=2).searcher.searcher
    seen = [search.suggest("a"), search.suggest("b")]
    search.on_trial_result("a", {"val_iou": 0.2, "training_iteration": 1})
    search.on_trial_complete("a", {"val_iou": 0.2, "training_iteration": 1})  # ASHA stopped it
    search.save(str(tmp_path / "searcher.pkl"))
    restored = PruningOptunaSearch.__new__(PruningOptunaSearch)
    restored.restore(str(tmp_path / "searcher.pkl"))
    seen.append(restored.suggest("c"))
    restored.on_trial_complete("b", {"val_iou": 0.5, "training_iteration": 4})
    seen.append(restored.suggest("d"))
    combos = {(GRID.trial_config(p).augment, GRID.trial_config(p).synthetic_mix) for p in seen}
    assert combos == {("em", 0.0), ("em", 0.5), ("robust", 0.0), ("robust", 0.5)}
    # the grid's last trial ends without an error, also when ASHA stops it (Optuna's own
    # GridSampler stops the study then, which outside study.optimize raises)
    restored.on_trial_complete("c", {"val_iou": 0.4, "training_iteration": 4})
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        restored.on_trial_complete("d", {"val_iou": 0.4, "training_iteration": 2})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in restored.study().trials}
    assert states == {"a": "PRUNED", "b": "COMPLETE", "c": "COMPLETE", "d": "PRUNED"}
