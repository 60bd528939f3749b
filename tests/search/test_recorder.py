"""TableRecorder: statuses, dedup on resume, and trials lost to a kill marked, not dropped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from emseg_search.search.recorder import TableRecorder
from emseg_search.space.spec import space_from_dict

SPACE = space_from_dict(
    {
        "name": "t",
        "budget": {"num_samples": 3},
        "scheduler": {"type": "asha", "max_epochs": 2},
        "fixed": {"tile_size": 64},
        "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    }
)


def _trial(trial_id: str, last: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        trial_id=trial_id, config={"lr": 1e-3}, last_result=last or {}, error_file=None
    )


def _epoch(epoch: int, iou: float) -> dict:
    return {
        "epoch": epoch,
        "val_iou": iou,
        "val_dice": iou + 0.1,
        "epoch_seconds": 2.0,
        "train_loss": 0.5,
    }


def test_statuses_best_values_and_resume_dedup(tmp_path: Path, make_context) -> None:
    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    full, short = _trial("a"), _trial("b")
    for t in (full, short):
        rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], full, _epoch(0, 0.5))
    rec.on_trial_result(0, [], full, _epoch(1, 0.7))
    rec.on_trial_result(0, [], short, _epoch(0, 0.2))
    rec.on_trial_complete(0, [], full)
    rec.on_trial_complete(0, [], short)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["a", "status"] == "completed" and trials.loc["b", "status"] == "pruned"
    assert trials.loc["a", "best_val_iou"] == 0.7 and trials.loc["a", "best_epoch"] == 1
    assert trials.loc["a", "params_lr"] == 1e-3 and trials.loc["a", "train_seconds"] == 4.0

    # a resumed search replays an epoch: one row per (trial, epoch), nothing lost
    again = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    again.on_trial_result(0, [], full, _epoch(1, 0.7))
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert len(epochs) == 3 and not epochs.duplicated(["trial_id", "epoch"]).any()


def test_an_epoch_checkpointed_but_never_recorded_is_taken_from_the_checkpoint(
    tmp_path: Path, make_context
) -> None:
    """The driver died after the trial checkpointed epoch 1 but before it recorded it; the
    resumed trial reports epoch 2 next: epoch 1's row comes from the checkpoint's history."""
    from emseg_search.train.checkpoint import checkpoint_name, save_checkpoint

    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    trial = _trial("a")
    rec.on_trial_result(0, [], trial, _epoch(0, 0.5))
    folder = tmp_path / "trials" / "a" / checkpoint_name(1)
    folder.mkdir(parents=True)
    save_checkpoint(folder, {"epoch": 1}, {}, [_epoch(0, 0.5), _epoch(1, 0.6)])
    rec.on_trial_result(0, [], trial, _epoch(2, 0.7))
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert list(epochs["epoch"]) == [0, 1, 2] and list(epochs["val_iou"]) == [0.5, 0.6, 0.7]
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert trials["epochs_run"].tolist() == [3]


def test_trial_unknown_to_tune_after_resume_is_marked_not_dropped(
    tmp_path: Path, make_context
) -> None:
    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    rec.on_trial_start(0, [], _trial("lost"))
    rec.on_trial_start(0, [], _trial("kept"))
    rec.on_experiment_end([_trial("kept")])
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["lost", "status"] == "error"
    assert "killed before Ray Tune saved" in trials.loc["lost", "error"]
    assert trials.loc["kept", "status"] == "running"


def test_trial_stopped_by_the_end_of_the_search_keeps_its_model(
    tmp_path: Path, monkeypatch, make_context
) -> None:
    """The time budget ran out mid-trial: Tune stops it without a trial-complete event."""
    written = []

    def write_model(self, trial):
        written.append(trial.trial_id)
        return tmp_path / "trials" / trial.trial_id / "model"

    monkeypatch.setattr(TableRecorder, "_write_model", write_model)
    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    cut, live = _trial("cut"), _trial("live")
    for t in (cut, live):
        rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], cut, _epoch(0, 0.6))
    cut.status, live.status = "TERMINATED", "RUNNING"
    rec.on_experiment_end([cut, live])
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["cut", "status"] == "stopped" and written == ["cut"]
    assert trials.loc["cut", "model_dir"].endswith("model")
    assert trials.loc["cut", "best_val_iou"] == 0.6
    assert trials.loc["live", "status"] == "running"


def test_diverged_trial_is_an_error_with_its_reason(tmp_path: Path, make_context) -> None:
    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    t = _trial("d", last={"diverged": True})
    rec.on_trial_start(0, [], t)
    rec.on_trial_result(
        0, [], t, {"epoch": 0, "diverged": True, "stop_reason": "loss became nan", "val_iou": 0.0}
    )
    rec.on_trial_complete(0, [], t)
    row = pd.read_parquet(tmp_path / "trials.parquet").iloc[0]
    assert row["status"] == "error" and row["error"] == "loss became nan"


def test_broken_checkpoint_is_recorded_not_fatal(tmp_path: Path, make_context) -> None:
    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    t = _trial("x")
    rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], t, _epoch(0, 0.4))
    broken = tmp_path / "trials" / "x" / "checkpoint_2026"
    broken.mkdir(parents=True)
    (broken / "history.json").write_text("{not json")
    rec.on_trial_complete(0, [], t)  # must not raise: the search goes on
    row = pd.read_parquet(tmp_path / "trials.parquet").iloc[0]
    assert row["status"] == "pruned" and pd.isna(row["model_dir"])
    assert row["error"].startswith("model artifact not written: CheckpointError")
    assert "history.json: not a readable epoch history" in row["error"]
    assert row["best_val_iou"] == 0.4


def test_model_is_written_from_the_search_data_not_a_new_read(
    tmp_path: Path, monkeypatch, make_context
) -> None:
    """The recorder writes a trial's artifact with the split and fingerprint run_search
    resolved (what prepare_data would give), without reading the data set again."""
    import emseg_search.search.trainable as trainable
    import emseg_search.train.outputs as outputs
    from emseg_search.train.checkpoint import COMPLETE_FILE
    from emseg_search.train.data import prepare_data

    context = make_context(SPACE, tmp_path)
    seen = {}

    def finish_run(cfg, run_dir, checkpoint, prepared, fingerprint, stride, trial_id=""):
        seen.update(cfg=cfg, prepared=prepared, fingerprint=fingerprint)
        return SimpleNamespace(model_dir=run_dir / "model")

    def no_read(cfg):
        raise AssertionError("prepare_data called: the data set was read again")

    monkeypatch.setattr(outputs, "finish_run", finish_run)
    monkeypatch.setattr(trainable, "prepare_data", no_read)
    monkeypatch.setattr("emseg_search.train.data.prepare_data", no_read)
    checkpoint = tmp_path / "trials" / "m" / "checkpoint_epoch_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / COMPLETE_FILE).write_text("[1]")
    rec = TableRecorder(tmp_path, context)
    t = _trial("m")
    rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], t, _epoch(0, 0.4))
    rec.on_trial_complete(0, [], t)
    row = pd.read_parquet(tmp_path / "trials.parquet").iloc[0]
    assert row["model_dir"] == str(tmp_path / "trials" / "m" / "model"), row["error"]
    want, _, want_fingerprint = prepare_data(seen["cfg"])
    assert seen["prepared"] == want and seen["fingerprint"] == want_fingerprint
    assert seen["cfg"].lr == 1e-3 and seen["cfg"].data == context.data


def test_particle_scores_of_the_best_and_last_epoch_and_tables_from_before(
    tmp_path: Path, make_context
) -> None:
    """best_/last_ particle columns follow the best (by val_iou here) and the last epoch; a
    search resumed on tables written before particle metrics keeps their rows, nulls there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emseg_search.results.schemas import EPOCH_SCHEMA, TRIAL_COLUMNS

    old_epochs = [n for n in EPOCH_SCHEMA.names if "particle" not in n and "count" not in n]
    old_epochs = [n for n in old_epochs if "panoptic" not in n]
    row = {"trial_id": "old", **_epoch(0, 0.4)}
    pq.write_table(
        pa.Table.from_pylist(
            [{k: row.get(k) for k in old_epochs}],
            pa.schema([EPOCH_SCHEMA.field(n) for n in old_epochs]),
        ),
        tmp_path / "epochs.parquet",
    )
    old_trials = {k: v for k, v in TRIAL_COLUMNS.items() if "particle" not in k}
    old_trials = {k: v for k, v in old_trials.items() if "panoptic" not in k and "count" not in k}
    old_row = {"trial_id": "old", "status": "completed", "best_val_iou": 0.4, "epochs_run": 1}
    pq.write_table(
        pa.Table.from_pylist([old_row], pa.schema(list(old_trials.items()))),
        tmp_path / "trials.parquet",
    )

    rec = TableRecorder(tmp_path, make_context(SPACE, tmp_path))
    trial = _trial("new")
    rec.on_trial_start(0, [], trial)
    scores = [(0.7, 0.6, 0.5, 0.1), (0.6, 0.8, 0.7, 0.05)]  # iou, f1, pq, count error
    for epoch, (iou, f1, pq_, count) in enumerate(scores):
        result = {
            **_epoch(epoch, iou),
            "val_particle_f1": f1,
            "val_panoptic_quality": pq_,
            "val_count_error": count,
        }
        rec.on_trial_result(0, [], trial, result)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    new = trials.loc["new"]
    assert (new["best_val_particle_f1"], new["last_val_particle_f1"]) == (0.6, 0.8)
    assert (new["best_val_panoptic_quality"], new["best_val_count_error"]) == (0.5, 0.1)
    assert trials.loc["old", "best_val_iou"] == 0.4
    assert pd.isna(trials.loc["old", "best_val_particle_f1"])
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert len(epochs) == 3 and epochs["val_particle_f1"].isna().sum() == 1


def test_pareto_column_marks_the_front_of_the_completed_trials(
    tmp_path: Path, make_context
) -> None:
    """objectives val_iou (max) and val_count_error (min): `pareto` over the completed trials'
    best epochs; pruned trials are never on it; a resumed recorder recomputes it from disk.
    Without objectives the column is null."""
    space = space_from_dict(
        {**SPACE.to_dict(), "objectives": {"val_iou": "max", "val_count_error": "min"}}
    )
    rec = TableRecorder(tmp_path, make_context(space, tmp_path))
    # (val_iou, val_count_error) per epoch; the best epoch is the one of highest val_iou
    runs = {
        "accurate": [(0.6, 0.1), (0.8, 0.5)],  # front: best IoU
        "counts": [(0.7, 0.2), (0.5, 0.9)],  # front: best count error at its best epoch (0.2)
        "dominated": [(0.6, 0.3), (0.65, 0.6)],
        "pruned": [(0.99, 0.0)],  # better than all, but stopped early
    }
    for trial_id, rows in runs.items():
        trial = _trial(trial_id)
        rec.on_trial_start(0, [], trial)
        for epoch, (iou, count) in enumerate(rows):
            rec.on_trial_result(0, [], trial, {**_epoch(epoch, iou), "val_count_error": count})
        rec.on_trial_complete(0, [], trial)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["counts", "best_val_count_error"] == 0.2
    expected = {"accurate": True, "counts": True, "dominated": False, "pruned": False}
    assert trials["pareto"].to_dict() == expected

    again = TableRecorder(tmp_path, make_context(space, tmp_path))  # --resume
    better = _trial("better")
    again.on_trial_start(0, [], better)
    for epoch, iou in enumerate((0.85, 0.9)):
        again.on_trial_result(0, [], better, {**_epoch(epoch, iou), "val_count_error": 0.15})
    again.on_trial_complete(0, [], better)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials["pareto"].to_dict() == {**dict.fromkeys(expected, False), "better": True}

    single = tmp_path / "single"
    plain = TableRecorder(single, make_context(SPACE, single))
    plain.on_trial_start(0, [], _trial("a"))
    assert pd.read_parquet(single / "trials.parquet")["pareto"].isna().all()
