"""The search: a Tune trainable that trains one configuration per trial (in the trial process
for 1 worker, else a data-parallel TorchTrainer), and run_search (its searcher, scheduler and
trial resources: search_algos.py).

results/<name>/
  experiment.json  trials.parquet  epochs.parquet  optuna.db  best/
  tune/            Ray Tune's experiment state (what --resume restores)
  trials/<id>/     each trial's Train run: checkpoints, epochs.parquet, model/
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emseg_search.search_algos import (
    build_scheduler,
    build_searcher,
    concurrency,
    settle_study_export,
    trial_resources,
)
from emseg_search.space import SearchSpace
from emseg_search.storage import Storage

TUNE_DIR = "tune"
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class SearchContext:
    """What every trial needs besides its sampled parameters (passed with tune.with_parameters)."""

    space: SearchSpace
    storage: Storage  # checkpoints: <storage>/trials/<trial_id>/
    data: str
    use_gpu: bool
    threads: int


def run_trial(params: dict[str, Any], context: SearchContext) -> None:
    """Tune trainable: one training run of the sampled configuration.

    A 1-worker trial trains right here (``Resources.inline``); more workers train
    data-parallel in a TorchTrainer that this function starts and waits on. Either way the
    checkpoints land in ``<storage>/trials/<trial_id>/`` and every epoch is reported to Tune.
    """
    import ray.tune

    from emseg_search.train.setup import prepare_data

    space = context.space
    cfg = space.trial_config(space.sampled_params(params), data=context.data)
    trial_id = ray.tune.get_context().get_trial_id()
    prepared, _, _ = prepare_data(cfg)
    storage = context.storage
    loop_config = {
        "trial": cfg.to_dict(),
        "prepared": prepared.to_dict(),
        "threads": context.threads,
    }
    # The result files (epochs, model) are written by the Tune driver when the trial ends
    # (recorder.TableRecorder): ASHA may stop this function at any report, the last included.
    if space.resources.inline:
        from emseg_search.train.session import TuneSession
        from emseg_search.train.worker import run_worker

        run_worker(loop_config, TuneSession(storage, f"{TRIALS_DIR}/{trial_id}", context.use_gpu))
        return

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from emseg_search.train.worker import train_loop_per_worker

    res = space.resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=context.use_gpu,
            resources_per_worker={
                "CPU": res.cpus_per_worker,
                **({"GPU": res.gpus_per_worker} if context.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable: a restored trial finds its own checkpoints
            storage_path=storage.path(TRIALS_DIR),
            storage_filesystem=None if storage.is_local else storage.fs,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # retries happen at the Tune level; a retried trial resumes from this run's checkpoint
            failure_config=ray.train.FailureConfig(max_failures=0),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()


def copy_best(exp_dir: Path, trials: Any) -> Path | None:
    """Copy the best trial's model artifact to ``best/`` (atomically); None if no model yet."""
    done = trials[trials["model_dir"].notna() & trials["best_val_iou"].notna()]
    if done.empty:
        return None
    row = done.sort_values("best_val_iou", ascending=False).iloc[0]
    tmp = exp_dir / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(row["model_dir"], tmp)
    (tmp / "TRIAL").write_text(f"{row['trial_id']}\n", encoding="utf-8")
    shutil.rmtree(exp_dir / "best", ignore_errors=True)
    tmp.replace(exp_dir / "best")
    return exp_dir / "best"


def _git_commit() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def write_experiment_json(exp_dir: Path, info: dict[str, Any]) -> None:
    """Merge ``info`` into experiment.json (atomically)."""
    import json

    path = exp_dir / "experiment.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(info)
    tmp = path.with_name(".experiment.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_search(
    space: SearchSpace,
    exp_dir: str | Path,
    data: str | None = None,
    resume: bool = False,
    address: str | None = None,
    max_failures: int = 1,
    storage_uri: str | None = None,
) -> Any:
    """Validate the data, run (or resume) the search, write best/ and return trials as pandas.

    ``storage_uri``: keep checkpoints and Tune's state there (see storage.py) instead of in
    ``exp_dir``."""
    import datetime as dt

    import numpy as np
    from ray import tune

    from emseg_search.artifact import versions
    from emseg_search.data import compute_fingerprint
    from emseg_search.ray_setup import init_ray
    from emseg_search.recorder import TableRecorder
    from emseg_search.results import load_experiment
    from emseg_search.train.setup import prepare_data, resolve_data_dir

    exp_dir = Path(exp_dir).absolute()
    probe = space.trial_config(space.random_params(np.random.default_rng(0)), data=data)
    data_dir = str(resolve_data_dir(probe))
    prepared, loaded, _ = prepare_data(probe.model_copy(update={"data": data_dir}))
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage.open(exp_dir, storage_uri)
    if not storage.is_local:
        storage.check_writable()
    cluster = init_ray(address)
    use_gpu = space.resources.gpus_per_worker > 0
    if use_gpu and not cluster.get("GPU"):
        raise RuntimeError(f"space {space.name!r} asks for GPUs but the Ray cluster has none")
    limit = concurrency(space, cluster)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_experiment_json(
        exp_dir,
        {
            "name": exp_dir.name,
            "space": space.to_dict(),
            "data": data_dir,
            "split": {
                "train": len(prepared.train),
                "val": len(prepared.val),
                "source": prepared.split_source,
            },
            "data_fingerprint": compute_fingerprint(loaded.items).model_dump(),
            "versions": versions(),
            "git_commit": _git_commit(),
            "cluster_resources": cluster,
            "storage": storage_uri,
            # a restored Tuner keeps the limit it started with
            **({} if resume else {"max_concurrent_trials": limit}),
            **({"resumed_at": now} if resume else {"started_at": now}),
            "finished_at": None,
        },
    )
    # Tune snapshots its experiment state (what --resume restores) every 10 s by default; a
    # trial started and killed inside that window could not be restored. Snapshots are small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    context = SearchContext(
        space=space,
        storage=storage,
        data=data_dir,
        use_gpu=use_gpu,
        threads=space.resources.cpus_per_worker,
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context), trial_resources(space)
    )
    remote_fs = None if storage.is_local else storage.fs
    if resume:
        tuner = tune.Tuner.restore(
            storage.path(TUNE_DIR),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=remote_fs,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                search_alg=build_searcher(space, exp_dir),
                scheduler=build_scheduler(space),
                num_samples=space.budget.num_samples,
                max_concurrent_trials=limit,
                time_budget_s=space.budget.time_budget_s,
                # no reuse_actors: a reused trial driver whose Train run is still shutting
                # down fails its reset (counted as a trial failure) or keeps training
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=storage.root,
                storage_filesystem=remote_fs,
                callbacks=[TableRecorder(exp_dir, space, data_dir, storage)],
                failure_config=tune.FailureConfig(max_failures=max_failures),
            ),
        )
    tuner.fit()
    settle_study_export(exp_dir / "optuna.db")
    trials = load_experiment(exp_dir)["trials"]
    best = copy_best(exp_dir, trials)
    write_experiment_json(
        exp_dir,
        {
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "best": None if best is None else str(best),
        },
    )
    return trials
