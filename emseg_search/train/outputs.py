"""What a finished (or stopped) run leaves behind: epochs.parquet and the model artifact of its
best epoch, written from the run's last checkpoint by whoever drives it (the Train driver, or
the search's recorder for a trial)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emseg_search.config import TrialConfig
from emseg_search.inference.artifact import write_artifact
from emseg_search.results.io import write_table
from emseg_search.results.schemas import EPOCH_SCHEMA, SCALAR_EPOCH_METRICS
from emseg_search.train.checkpoint import read_best, read_hardware, read_history
from emseg_search.train.data import PreparedData


@dataclass(frozen=True)
class TrainOutcome:
    """Where a run's files are and how it ended."""

    run_dir: Path
    model_dir: Path | None
    epochs: pd.DataFrame
    best_val_iou: float | None  # None: trained without a validation split
    stop_reason: str | None


def write_epochs(history: list[dict[str, Any]], path: Path, trial_id: str = "") -> pd.DataFrame:
    """Write a run's epoch history as epochs.parquet (declared schema); returns it as pandas."""
    write_table([{**row, "trial_id": trial_id} for row in history], EPOCH_SCHEMA, path)
    return pd.read_parquet(path)


def finish_run(
    cfg: TrialConfig,
    run_dir: Path,
    checkpoint_dir: Path | None,
    prepared: PreparedData,
    fingerprint: Any,
    stride: int,
    trial_id: str = "",
    stop_reason: str | None = None,
) -> TrainOutcome:
    """Write epochs.parquet and the model artifact (best epoch) from a run's last checkpoint."""
    if checkpoint_dir is None:
        empty = pd.DataFrame(columns=EPOCH_SCHEMA.names)
        return TrainOutcome(run_dir, None, empty, 0.0, stop_reason or "no checkpoint")
    history = read_history(checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # checkpoints may live in cloud storage
    best = read_best(checkpoint_dir)
    epochs = write_epochs(history, run_dir / "epochs.parquet", trial_id)
    model_dir = None
    if best:
        metrics: dict[str, float] = {}  # none without a validation split: the last epoch
        if prepared.val:
            row = epochs.loc[epochs["val_epoch"] == epochs["best_epoch"].iloc[-1]].iloc[-1]
            metrics = {
                k: float(row[k])
                for k in SCALAR_EPOCH_METRICS
                if k.startswith("val_") and k != "val_epoch"
            }
        metrics["best_epoch"] = int(epochs["best_epoch"].iloc[-1])
        model_dir = write_artifact(
            run_dir / "model",
            cfg,
            best,
            prepared.mean,
            prepared.std,
            prepared.normalization,
            fingerprint,
            stride,
            metrics,
            trained_on=read_hardware(checkpoint_dir),
        )
    best_iou = float(epochs["best_val_iou"].max()) if prepared.val and len(epochs) else None
    return TrainOutcome(run_dir, model_dir, epochs, best_iou, stop_reason)
