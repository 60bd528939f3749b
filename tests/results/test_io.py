"""Declared Parquet schemas, atomic writes, and load_experiment for pandas users."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emseg_search.results.io import (
    best_epoch_shift_ious,
    format_change,
    load_experiment,
    ranks_by_other_than_iou,
    read_rows,
    read_table,
    selection_score,
    shift_ious,
    write_table,
)
from emseg_search.results.schemas import EPOCH_SCHEMA, trial_schema


def test_trial_schema_types_follow_the_config_fields() -> None:
    schema = trial_schema(["arch", "lr", "batch_size", "output_stride", "amp"])
    assert schema.field("params_arch").type == pa.string()
    assert schema.field("params_lr").type == pa.float64()
    assert schema.field("params_batch_size").type == pa.int64()
    assert schema.field("params_output_stride").type == pa.int64()  # Literal[8, 16] | None
    assert schema.field("params_amp").type == pa.bool_()
    assert schema.names[:3] == ["trial_id", "status", "best_val_iou"]


def test_schema_is_declared_not_inferred(tmp_path: Path) -> None:
    """A first row with missing values must not change the column types."""
    schema = trial_schema(["lr"])
    write_table([{"trial_id": "a", "status": "running"}], schema, tmp_path / "t.parquet")
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.equals(schema)
    assert table.to_pylist()[0]["params_lr"] is None


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    rows = [{"trial_id": "a", "epoch": 0, "val_iou": 0.5}]
    write_table(rows, EPOCH_SCHEMA, tmp_path / "epochs.parquet")
    write_table(rows * 2, EPOCH_SCHEMA, tmp_path / "epochs.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["epochs.parquet"]
    assert len(read_rows(tmp_path / "epochs.parquet")) == 2
    assert read_rows(tmp_path / "missing.parquet") == []


def test_load_experiment_for_pandas(tmp_path: Path) -> None:
    schema = trial_schema(["arch"])
    write_table(
        [
            {"trial_id": "a", "status": "completed", "best_val_iou": 0.8, "params_arch": "unet"},
            {
                "trial_id": "b",
                "status": "pruned",
                "best_val_iou": 0.6,
                "params_arch": "deeplabv3plus",
            },
            {"trial_id": "c", "status": "completed", "best_val_iou": 0.7, "params_arch": "unet"},
        ],
        schema,
        tmp_path / "trials.parquet",
    )
    (tmp_path / "experiment.json").write_text(json.dumps({"name": "x"}))
    exp = load_experiment(tmp_path)
    by_arch = exp["trials"].groupby("params_arch")["best_val_iou"].max()
    assert by_arch.to_dict() == {"deeplabv3plus": 0.6, "unet": 0.8}
    assert exp["experiment"]["name"] == "x" and exp["epochs"].empty
    with pytest.raises(FileNotFoundError, match="not an emseg-search experiment"):
        load_experiment(tmp_path / "nothing")


def test_read_table_takes_a_consistent_snapshot_while_a_search_rewrites_the_file(
    tmp_path: Path,
) -> None:
    """The live-reading contract: a reader polling epochs.parquet while the recorder rewrites
    it never gets a mixed old/new file (reading by path does, about 1 read in 4, here)."""
    path = tmp_path / "epochs.parquet"
    write_table([], EPOCH_SCHEMA, path)
    stop = threading.Event()

    def rewrite() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            rows = [{"trial_id": f"t{i}", "epoch": e} for e in range(i % 40)]
            write_table(rows, EPOCH_SCHEMA, path)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(800):
            table = read_table(path)
            ids = set(table.column("trial_id").to_pylist())
            assert len(ids) <= 1  # every row from one write, never two versions mixed
    finally:
        stop.set()
        writer.join()


def test_each_val_shifts_iou_survives_the_table_and_a_resumes_rewrite(tmp_path: Path) -> None:
    """epochs.parquet keeps each shift's IoU (val_shift_iou); shift_ious spreads it into a
    column per shift, also after --resume rewrote the rows it read back (read_rows), and
    best_epoch_shift_ious picks each trial's best epoch."""
    import pandas as pd

    dense = "synth:dense-small-carbon"
    rows = [
        {"trial_id": "a", "epoch": 0, "val_shift_iou": {"scale_x2": 0.5, dense: 0.25}},
        {"trial_id": "a", "epoch": 1, "val_shift_iou": {"scale_x2": 0.75, dense: 0.5}},
        {"trial_id": "b", "epoch": 0, "val_iou": 0.5},  # no val_shifts
    ]
    path = write_table(rows, EPOCH_SCHEMA, tmp_path / "epochs.parquet")
    write_table(read_rows(path), EPOCH_SCHEMA, path)  # what a resumed recorder writes back
    epochs = read_table(path).to_pandas()
    spread = shift_ious(epochs)
    assert list(spread.columns) == ["scale_x2", dense]
    assert spread.iloc[:2].to_numpy().tolist() == [[0.5, 0.25], [0.75, 0.5]]
    assert spread.iloc[2].isna().all()
    trials = pd.DataFrame({"trial_id": ["a", "b"], "best_epoch": [1, 0]})
    best = best_epoch_shift_ious(trials, epochs)
    assert best.index.tolist() == ["a"] and best.loc["a"].tolist() == [0.75, 0.5]
    # a table from before the column: no shift columns, no error
    assert shift_ious(epochs.drop(columns="val_shift_iou")).columns.empty
    assert best_epoch_shift_ious(trials, epochs.drop(columns="val_shift_iou")).empty


def test_selection_score_and_whether_it_is_the_iou() -> None:
    """What ranks trials, and whether tables must show val_score beside the IoU: a space
    without val_shifts (score = IoU, or tables from before best_val_score) ranks by the IoU; a
    robust_weight mix ranks by the score, NaN scores (errored trials) falling back to the IoU."""
    old = pd.DataFrame({"best_val_iou": [0.9, 0.8]})
    assert selection_score(old).tolist() == [0.9, 0.8]
    assert not ranks_by_other_than_iou(old)
    plain = old.assign(best_val_score=[0.9, np.nan])
    assert selection_score(plain).tolist() == [0.9, 0.8]
    assert not ranks_by_other_than_iou(plain)
    mixed = old.assign(best_val_score=[0.85, np.nan])
    assert selection_score(mixed).tolist() == [0.85, 0.8]
    assert ranks_by_other_than_iou(mixed)


def test_format_change_gives_the_interval_and_leaves_shifts_without_one_blank() -> None:
    row = {
        "iou_change": -0.0312,
        "iou_change_ci_low": -0.0771,
        "iou_change_ci_high": 0.0394,
        "iou_change_median_image": -0.0281,
    }
    assert format_change(row) == "-0.031 [-0.077, +0.039]"
    assert format_change(pd.Series(row), median=True) == (
        "-0.031 [-0.077, +0.039] (median image -0.028)"
    )
    # the reference shift and the synthetic domains have no interval (NaN in the tables)
    assert format_change({**row, "iou_change_ci_low": float("nan")}) == ""
    assert format_change({"iou_change": 0.0}) == ""
    # no median image (an older table): the interval alone
    assert format_change({**row, "iou_change_median_image": np.nan}, median=True) == (
        "-0.031 [-0.077, +0.039]"
    )
