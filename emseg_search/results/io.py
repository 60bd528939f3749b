"""Result tables: atomic writers, consistent-snapshot readers, and load_experiment for pandas
(schemas: results/schemas.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from emseg_search.atomic import atomic_path
from emseg_search.results.schemas import EPOCH_SCHEMA


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: str | Path) -> Path:
    """Write rows with a declared schema, atomically (temp file, fsync, rename)."""
    path = Path(path)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    for f in schema:
        if not pa.types.is_floating(f.type):
            # pandas writes a missing string or integer as NaN: it is a null here
            columns[f.name] = [None if _is_nan(v) else v for v in columns[f.name]]
    table = pa.Table.from_pydict(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def is_stale(derived: Path, source: Path) -> bool:
    """Whether a table ``derived`` from ``source`` must be made again: ``source`` exists and
    ``derived`` is missing or older (modification times)."""
    if not source.is_file():
        return False
    return not derived.is_file() or derived.stat().st_mtime_ns < source.stat().st_mtime_ns


def format_change(row: pd.Series | dict[str, Any], median: bool = False) -> str:
    """A shift's IoU change against ``none`` with its interval (the columns of
    ``analysis.intervals.shift_change_intervals`` and FINAL_ROBUSTNESS_SUMMARY_SCHEMA), e.g.
    "-0.031 [-0.077, +0.039]", with ``median`` "... (median image -0.028)"; "" where it has none
    (the reference, a synthetic domain)."""
    low, high = row.get("iou_change_ci_low"), row.get("iou_change_ci_high")
    if pd.isna(low) or pd.isna(high):  # None, NaN of any float width
        return ""
    text = f"{row['iou_change']:+.3f} [{low:+.3f}, {high:+.3f}]"
    middle = row.get("iou_change_median_image")
    if median and not pd.isna(middle):
        text += f" (median image {middle:+.3f})"
    return text


def read_table(path: str | Path) -> pa.Table:
    """A consistent snapshot of a Parquet table that a running search may be rewriting.

    The file is read into memory with one open() and parsed from there: ``write_table``
    replaces it atomically, but a reader that opens the path twice (pyarrow reads the
    footer, then the pages) can mix two versions and fail with "Couldn't deserialize thrift".
    """
    return pq.read_table(pa.BufferReader(Path(path).read_bytes()))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet table (empty list when the file does not exist)."""
    path = Path(path)
    return read_table(path).to_pylist() if path.is_file() else []


def load_experiment(path: str | Path) -> dict[str, Any]:
    """An experiment folder as pandas: {"trials": DataFrame, "epochs": DataFrame,
    "experiment": dict from experiment.json}."""
    path = Path(path)
    if not (path / "trials.parquet").is_file():
        raise FileNotFoundError(
            f"{path}: no trials.parquet; not an emseg-search experiment "
            "(or no trial has started yet)"
        )
    experiment = {}
    if (path / "experiment.json").is_file():
        experiment = json.loads((path / "experiment.json").read_text(encoding="utf-8"))
    epochs = (
        read_table(path / "epochs.parquet").to_pandas()
        if (path / "epochs.parquet").is_file()
        else pd.DataFrame(columns=EPOCH_SCHEMA.names)
    )
    return {
        "trials": read_table(path / "trials.parquet").to_pandas(),
        "epochs": epochs,
        "experiment": experiment,
    }


def selection_score(trials: pd.DataFrame) -> pd.Series:
    """What ranks the trials of trials.parquet: best_val_score (the epoch-selection metric,
    val_iou unless the space set val_shifts), best_val_iou where a table predates it."""
    iou = trials["best_val_iou"].astype(float)
    if "best_val_score" not in trials:
        return iou
    return trials["best_val_score"].astype(float).fillna(iou)


def ranks_by_other_than_iou(trials: pd.DataFrame) -> bool:
    """Whether the selection score differs from best_val_iou for some trial (a space with
    val_shifts and robust_weight > 0): then tables and plots name val_score, not the IoU."""
    import numpy as np

    iou = trials["best_val_iou"].astype(float)
    return not np.allclose(selection_score(trials), iou, equal_nan=True)


def shift_ious(epochs: pd.DataFrame) -> pd.DataFrame:
    """The val_shift_iou column of an epochs table spread into one column per shift (its IoU),
    on the table's index; NaN where an epoch was not scored under that shift, no columns when
    none was (spaces without val_shifts, tables from before the column)."""
    column = epochs["val_shift_iou"] if "val_shift_iou" in epochs else [None] * len(epochs)
    rows = [{} if v is None or _is_nan(v) else dict(v) for v in column]
    return pd.DataFrame(rows, index=epochs.index, dtype=float)


def best_epoch_shift_ious(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Each trial's IoU under each val_shift at its best epoch (trials.parquet's best_epoch):
    one row per trial_id that has them, one column per shift."""
    shifts = shift_ious(epochs)
    if shifts.empty or shifts.columns.empty or "best_epoch" not in trials:
        return pd.DataFrame(index=pd.Index([], name="trial_id"))
    scored = pd.concat([epochs[["trial_id", "epoch"]], shifts], axis=1)
    best = trials[["trial_id", "best_epoch"]].dropna().astype({"best_epoch": int})
    out = best.merge(scored, left_on=["trial_id", "best_epoch"], right_on=["trial_id", "epoch"])
    out = out.drop(columns=["best_epoch", "epoch"]).set_index("trial_id")
    return out.dropna(how="all")
