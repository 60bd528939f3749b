"""The experiment audit on hand-made folders: a consistent one passes, and each kind of damage
the fault-injection suite looks for is found and counted."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from helpers import write_tiny_artifact

from emseg_search.analysis.audit import audit_experiment
from emseg_search.cli.audit import main as audit_main
from emseg_search.results.io import write_table
from emseg_search.results.schemas import EPOCH_SCHEMA, trial_schema


def make_experiment(
    root: Path,
    epochs: list[tuple[str, int]] | None = None,
    states: dict[str, str] | None = None,
    best: str | None = "t1",
) -> Path:
    """A finished 2-trial search folder: t1 (2 epochs, best) and t2 (2 epochs)."""
    root.mkdir(parents=True)
    ious = {("t1", 0): 0.5, ("t1", 1): 0.7, ("t2", 0): 0.4, ("t2", 1): 0.6}
    epochs = epochs if epochs is not None else list(ious)
    rows = [{"trial_id": t, "epoch": e, "val_iou": ious.get((t, e), 0.1)} for t, e in epochs]
    write_table(rows, EPOCH_SCHEMA, root / "epochs.parquet")
    trials = [
        {
            "trial_id": t,
            "status": "completed",
            "epochs_run": 2,
            "best_val_iou": ious[(t, 1)],
            "best_val_score": ious[(t, 1)],
            "model_dir": str(root / "trials" / t / "model"),
        }
        for t in ("t1", "t2")
    ]
    write_table(trials, trial_schema(()), root / "trials.parquet")
    (root / "experiment.json").write_text(
        json.dumps({"space": {"name": "x", "metric": "val_iou"}, "finished_at": "now"})
    )
    study = optuna.create_study(study_name="x", storage=f"sqlite:///{root / 'optuna.db'}")
    states = states or {"t1": "COMPLETE", "t2": "COMPLETE"}
    for t, state in states.items():
        trial = study.ask()
        trial.set_user_attr("tune_trial_id", t)
        if state == "COMPLETE":
            study.tell(trial, ious[(t, 1)])
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    if best:
        write_tiny_artifact(root / "best")
        (root / "best" / "TRIAL").write_text(f"{best}\n")
    return root


def test_a_consistent_experiment_passes(tmp_path: Path) -> None:
    report = audit_experiment(make_experiment(tmp_path / "x"))
    assert report.ok, report.to_text()
    assert (report.trials, report.epochs, report.finished) == (2, 4, True)
    assert audit_main([str(tmp_path / "x")]) == 0


def test_duplicated_and_missing_epochs_are_counted(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "x", epochs=[("t1", 0), ("t1", 1), ("t1", 1), ("t2", 1)])
    report = audit_experiment(exp, load_model=False)
    assert report.duplicated_epochs == 1 and report.missing_epochs == 1, report.to_text()
    assert any("misses epoch(s) [0]" in p for p in report.problems)
    assert audit_main([str(exp), "--no-model"]) == 1


def test_a_study_that_disagrees_with_the_tables_is_found(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "x", states={"t1": "COMPLETE", "t2": "FAIL"})
    report = audit_experiment(exp, load_model=False)
    assert report.problems == ["optuna.db: trial t2 is FAIL, trials.parquet says completed"]


def test_a_study_missing_a_trial_is_found(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "x", states={"t1": "COMPLETE"})
    assert audit_experiment(exp, load_model=False).problems == [
        "optuna.db: trial t2 (completed) is missing"
    ]


def test_best_of_another_trial_and_a_missing_best_are_found(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "x", best="t2")
    assert any("best score" in p for p in audit_experiment(exp, load_model=False).problems)
    exp = make_experiment(tmp_path / "y", best=None)
    assert any("best: missing" in p for p in audit_experiment(exp).problems)


def test_a_torn_table_and_an_unloadable_best_are_found(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "x")
    data = (exp / "epochs.parquet").read_bytes()
    (exp / "epochs.parquet").write_bytes(data[: len(data) // 2])
    (exp / "best" / "weights.pt").write_bytes(b"not a torch file")
    report = audit_experiment(exp)
    assert any("epochs.parquet: unreadable" in p for p in report.problems), report.to_text()
    assert any("does not load" in p for p in report.problems), report.to_text()


def test_the_command_refuses_a_folder_that_is_no_search(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert audit_main([str(tmp_path)]) == 2
    assert "no trials.parquet" in capsys.readouterr().err
