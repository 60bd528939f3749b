"""The Tune driver: run_search validates the data, starts (or restores) Ray Tune with the
searcher, scheduler and trial resources of search/algorithms.py over the trainable of
search/trainable.py, and copies the best trial's model to best/.

results/<name>/
  experiment.json  trials.parquet  epochs.parquet  optuna.db  best/
  tune/            Ray Tune's experiment state (what --resume restores)
  trials/<id>/     each trial's Train run: checkpoints, epochs.parquet, model/
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from emseg_search.search.algorithms import (
    build_scheduler,
    build_searcher,
    concurrency,
    settle_study_export,
    trial_resources,
)
from emseg_search.search.storage import Storage
from emseg_search.search.trainable import SearchContext, run_trial
from emseg_search.space.spec import SearchSpace

TUNE_DIR = "tune"


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

    from emseg_search.data import compute_fingerprint
    from emseg_search.inference.artifact import versions
    from emseg_search.results.io import load_experiment
    from emseg_search.search.recorder import TableRecorder
    from emseg_search.train.cluster import init_ray
    from emseg_search.train.data import prepare_data, resolve_data_dir

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
