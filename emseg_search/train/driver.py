"""The Train driver: one TorchTrainer run of a TrialConfig, and the files it leaves behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from emseg_search.atomic import write_text
from emseg_search.config import TrialConfig
from emseg_search.train.data import prepare_data
from emseg_search.train.outputs import TrainOutcome, finish_run
from emseg_search.train.worker import train_loop_per_worker


class TrainingFailed(RuntimeError):
    """Ray Train gave up on a run (a worker raised or died and retries were spent)."""


def failure_reason(exc: BaseException) -> str:
    """One line saying why a Ray Train run failed: the first failed worker's error, if any."""
    failures = getattr(exc, "worker_failures", None) or {}
    if failures:
        rank, err = sorted(failures.items(), key=lambda kv: kv[0])[0]
        exc, prefix = err, f"worker {rank}: "
    else:
        prefix = ""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{prefix}{type(exc).__name__}" + (f": {text[:300]}" if text else "")


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

    from emseg_search.data.shifts import check_val_shifts
    from emseg_search.models.registry import (
        check_input_size,
        check_weights_available,
        min_batch_size,
        required_stride,
    )
    from emseg_search.train.cluster import ClusterError, init_ray
    from emseg_search.train.init_from import check_init_from, model_config

    run_dir = Path(run_dir).absolute()
    check_input_size(cfg)
    check_val_shifts(cfg.val_shifts)
    if cfg.batch_size < min_batch_size(cfg):
        raise ValueError(
            f"batch_size={cfg.batch_size}: {cfg.arch} needs at least "
            f"{min_batch_size(cfg)} images per batch (BatchNorm on 1x1 maps)"
        )
    check_weights_available(model_config(cfg))
    check_init_from(cfg)
    prepared, _, fingerprint = prepare_data(cfg)  # bad data fails here, before Ray starts
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_yaml(run_dir / "config.yaml")
    write_text(run_dir / "data.json", json.dumps(prepared.to_dict(), indent=1))

    cluster = init_ray(address)
    if use_gpu and cluster.get("GPU", 0) < workers:
        raise ClusterError(
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
            "fingerprint": fingerprint.model_dump(mode="json"),
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
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:  # a worker died or raised; retries spent
        raise TrainingFailed(
            f"training in {run_dir} failed: {failure_reason(exc)}. Its checkpoints are kept in "
            f"{run_dir / 'ray'}: rerun the same command with --resume to continue from the "
            "last one"
        ) from exc
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


def clear_run(run_dir: str | Path) -> None:
    """Delete a run folder (for --overwrite)."""
    shutil.rmtree(run_dir, ignore_errors=True)
