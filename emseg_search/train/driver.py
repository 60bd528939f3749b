"""The Train driver: one TorchTrainer run of a TrialConfig, and the files it leaves behind."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from emseg_search.artifact import write_artifact
from emseg_search.config import TrialConfig
from emseg_search.results import EPOCH_METRICS, EPOCH_SCHEMA, write_table
from emseg_search.train.setup import PreparedData, prepare_data
from emseg_search.train.worker import BEST_FILE, HISTORY_FILE, train_loop_per_worker


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


def scaling(workers: int, use_gpu: bool, cluster: dict[str, float]) -> tuple[dict[str, float], int]:
    """Resources per Train worker and torch threads each: the cluster's CPUs shared evenly."""
    cpus = max(1, int(cluster.get("CPU", 1)) // workers)
    return {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}, cpus


def run_training(
    cfg: TrialConfig,
    run_dir: str | Path,
    workers: int = 1,
    use_gpu: bool = False,
    address: str | None = None,
    max_failures: int = 0,
) -> TrainOutcome:
    """Validate the data, train with Ray Train (DDP over ``workers``), then write
    ``run_dir``/{config.yaml, data.json, epochs.parquet, model/}.

    Rerunning with the same ``run_dir`` resumes from the latest checkpoint.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from emseg_search.models import check_input_size, min_batch_size, required_stride
    from emseg_search.ray_setup import init_ray

    run_dir = Path(run_dir).absolute()
    check_input_size(cfg)
    if cfg.batch_size < min_batch_size(cfg):
        raise ValueError(
            f"batch_size={cfg.batch_size}: {cfg.arch} needs at least "
            f"{min_batch_size(cfg)} images per batch (BatchNorm on 1x1 maps)"
        )
    prepared, _, fingerprint = prepare_data(cfg)  # bad data fails here, before Ray starts
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_yaml(run_dir / "config.yaml")
    (run_dir / "data.json").write_text(json.dumps(prepared.to_dict(), indent=1), "utf-8")

    cluster = init_ray(address)
    if use_gpu and cluster.get("GPU", 0) < workers:
        raise RuntimeError(
            f"--gpu with {workers} worker(s) needs {workers} GPU(s); the Ray "
            f"cluster has {cluster.get('GPU', 0):g}"
        )
    per_worker, threads = scaling(workers, use_gpu, cluster)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "trial": cfg.to_dict(),
            "prepared": prepared.to_dict(),
            "threads": threads,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name="ray",
            storage_path=str(run_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            # per-report INFO lines drown the epoch summaries the worker prints
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()
    last = result.metrics or {}
    stop_reason = last.get("stop_reason") if last.get("diverged") else None
    if result.checkpoint is None:
        return finish_run(
            cfg, run_dir, None, prepared, fingerprint, required_stride(cfg), stop_reason=stop_reason
        )
    with result.checkpoint.as_directory() as folder:
        return finish_run(
            cfg,
            run_dir,
            Path(folder),
            prepared,
            fingerprint,
            required_stride(cfg),
            stop_reason=stop_reason,
        )


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
    history = json.loads((checkpoint_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    run_dir.mkdir(parents=True, exist_ok=True)  # checkpoints may live in cloud storage
    best = torch.load(checkpoint_dir / BEST_FILE, map_location="cpu", weights_only=True)
    epochs = write_epochs(history, run_dir / "epochs.parquet", trial_id)
    model_dir = None
    if best:
        metrics: dict[str, float] = {}  # none without a validation split: the last epoch
        if prepared.val:
            row = epochs.loc[epochs["val_epoch"] == epochs["best_epoch"].iloc[-1]].iloc[-1]
            metrics = {
                k: float(row[k]) for k in EPOCH_METRICS if k.startswith("val_") and k != "val_epoch"
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
        )
    best_iou = float(epochs["best_val_iou"].max()) if prepared.val and len(epochs) else None
    return TrainOutcome(run_dir, model_dir, epochs, best_iou, stop_reason)


def clear_run(run_dir: str | Path) -> None:
    """Delete a run folder (for --overwrite)."""
    shutil.rmtree(run_dir, ignore_errors=True)
