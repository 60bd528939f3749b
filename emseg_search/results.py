"""Result tables: declared Parquet schemas, atomic writers, and loaders for pandas.

results/<experiment>/trials.parquet   one row per trial   (TRIAL_COLUMNS + params_<name>)
results/<experiment>/epochs.parquet   one row per trial x epoch   (EPOCH_COLUMNS)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Metrics of one epoch, as the Train worker reports them.
EPOCH_METRICS: dict[str, pa.DataType] = {
    "epoch": pa.int64(),
    "train_loss": pa.float64(),
    "lr": pa.float64(),
    "epoch_seconds": pa.float64(),
    "val_seconds": pa.float64(),
    "train_images_per_s": pa.float64(),
    "val_epoch": pa.int64(),
    "val_iou": pa.float64(),
    "val_dice": pa.float64(),
    "val_precision": pa.float64(),
    "val_recall": pa.float64(),
    "val_mean_image_iou": pa.float64(),
    "val_mean_image_dice": pa.float64(),
    "best_val_iou": pa.float64(),
    "best_epoch": pa.int64(),
}
EPOCH_SCHEMA = pa.schema([("trial_id", pa.string()), *EPOCH_METRICS.items()])

TRIAL_STATUSES = ("running", "completed", "pruned", "stopped", "error")
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": pa.string(),
    "status": pa.string(),
    "best_val_iou": pa.float64(),
    "last_val_iou": pa.float64(),
    "best_val_dice": pa.float64(),
    "best_epoch": pa.int64(),
    "epochs_run": pa.int64(),
    "train_seconds": pa.float64(),
    "error": pa.string(),
    "model_dir": pa.string(),
}


_ARROW = {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}


def trial_schema(param_names: tuple[str, ...] | list[str]) -> pa.Schema:
    """Schema of trials.parquet for a search space: fixed columns + ``params_<name>``."""
    from emseg_search.config import field_type

    params = [(f"params_{n}", _ARROW.get(field_type(n)[0], pa.string())) for n in param_names]
    return pa.schema([*TRIAL_COLUMNS.items(), *params])


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: str | Path) -> Path:
    """Write rows with a declared schema, atomically (temp file + rename)."""
    path = Path(path)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


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
