"""The Tune driver: run_search validates the data, starts (or restores) Ray Tune with the
searcher, scheduler and trial resources of search/algorithms.py over the trainable of
search/trainable.py, and copies the best trial's model to best/.

results/<name>/
  experiment.json  trials.parquet  epochs.parquet  optuna.db  best/
  tune/            Ray Tune's experiment state (what --resume restores)
  trials/<id>/     each trial's Train run: checkpoints, epochs.parquet, model/
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emseg_search.atomic import atomic_dir, write_text
from emseg_search.search.algorithms import (
    TimeBudget,
    build_scheduler,
    build_search,
    concurrency,
    settle_study_export,
    trial_resources,
)
from emseg_search.search.storage import Storage, strip_credentials
from emseg_search.search.trainable import SearchContext, run_trial
from emseg_search.space.spec import SearchSpace
from emseg_search.train.cluster import ClusterError

TUNE_DIR = "tune"
RESUME_RULE = (
    "a resumed search keeps the space it started with, except that budget.num_samples may "
    "grow and budget.time_budget_s may grow or be removed"
)


class ResumeError(ValueError):
    """--resume with a space or data other than the experiment's (the message names them)."""


def copy_best(exp_dir: Path, trials: Any) -> Path | None:
    """Copy the best trial's model artifact to ``best/`` (atomically); None if no model yet."""
    from emseg_search.results.io import selection_score

    done = trials.assign(_score=selection_score(trials))
    done = done[done["model_dir"].notna() & done["_score"].notna()]
    if done.empty:
        return None
    row = done.sort_values("_score", ascending=False).iloc[0]
    with atomic_dir(exp_dir / "best") as tmp:
        shutil.copytree(row["model_dir"], tmp, dirs_exist_ok=True)
        (tmp / "TRIAL").write_text(f"{row['trial_id']}\n", encoding="utf-8")
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


def read_experiment_json(exp_dir: Path) -> dict[str, Any]:
    """experiment.json of ``exp_dir`` ({} when there is none; ResumeError if unreadable)."""
    path = exp_dir / "experiment.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ResumeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_experiment_json(exp_dir: Path, info: dict[str, Any]) -> None:
    """Merge ``info`` into experiment.json (atomically)."""
    path = exp_dir / "experiment.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(info)
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key path, old value, new value) of every leaf that differs; lists are leaves."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            path = f"{prefix}.{key}" if prefix else str(key)
            out += changed_keys(old.get(key), new.get(key), path)
        return out
    return [] if old == new else [(prefix, old, new)]


def _extends(path: str, old: Any, new: Any) -> bool:
    """Whether changing ``path`` from ``old`` to ``new`` only gives a search more to do."""
    if path == "budget.num_samples":
        return isinstance(old, int) and isinstance(new, int) and new > old
    if path == "budget.time_budget_s":
        return old is not None and (new is None or new > old)
    return False


def check_resume_space(recorded: dict[str, Any], space: SearchSpace, where: Path) -> None:
    """ResumeError naming each key of ``space`` that differs from the one experiment.json
    (``where``) recorded, unless it only extends the budget (RESUME_RULE)."""
    if "space" not in recorded:
        return
    new = json.loads(json.dumps(space.to_dict()))  # as experiment.json holds it
    refused = [c for c in changed_keys(recorded["space"], new) if not _extends(*c)]
    if refused:
        diffs = "; ".join(f"{path}: {old!r} -> {value!r}" for path, old, value in refused)
        raise ResumeError(
            f"--resume: the search space differs from the one {where} recorded ({diffs}); "
            f"{RESUME_RULE}. Undo the edit, or pass --overwrite or another --name to search "
            "the edited space"
        )


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_resume_data(recorded: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """ResumeError when the data folder, its split or its fingerprint differ from what
    experiment.json (``where``) recorded: the trials so far trained on that data."""
    changed = [k for k in ("data", "split", "data_fingerprint") if k in recorded]
    # compared as JSON text, as recorded: NaN equals NaN, a tuple its list
    changed = [k for k in changed if _as_json(recorded[k]) != _as_json(current[k])]
    if changed:
        shown = "; ".join(
            f"{k}: {recorded[k]!r} -> {current[k]!r}" if k != "data_fingerprint" else k
            for k in changed
        )
        raise ResumeError(
            f"--resume: the data differs from what {where} recorded ({shown}); the trials so "
            "far trained on that data. Resume with the same data, or pass --overwrite or "
            "another --name"
        )


@contextlib.contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """Ray Tune's and Optuna's console output: theirs if ``verbose``, else almost none.

    Quiet, Tune runs its classic output engine (RAY_AIR_NEW_OUTPUT=0) at verbosity 0 with a
    silent ProgressReporter: the new engine prints its start box even at verbosity 0. Optuna
    logs at WARNING (its INFO line per study export is noise).
    """
    import optuna

    before = optuna.logging.get_verbosity(), os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before[0])
        if before[1] is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)


def run_search(
    space: SearchSpace,
    exp_dir: str | Path,
    data: str | None = None,
    resume: bool = False,
    address: str | None = None,
    max_failures: int = 1,
    storage_uri: str | None = None,
    verbose: bool = False,
) -> Any:
    """Validate the data, run (or resume) the search, write best/ and return trials as pandas.

    The data is validated, split and fingerprinted here, once, for every trial. A --resume
    (``resume``) must keep the space and the data (ResumeError otherwise, before Ray starts).
    ``storage_uri``: keep checkpoints and Tune's state there (see storage.py) instead of in
    ``exp_dir``. ``verbose=False``: one console line per trial event (search/progress.py);
    True: Ray Tune's own tables and log lines, and the trials' output.
    """
    import datetime as dt

    import numpy as np
    from ray import tune

    from emseg_search.config import TrialConfig
    from emseg_search.data import compute_fingerprint
    from emseg_search.inference.artifact import versions
    from emseg_search.models.registry import check_weights_available
    from emseg_search.results.io import load_experiment
    from emseg_search.space.spec import MODEL_FIELDS
    from emseg_search.train.cluster import init_ray
    from emseg_search.train.data import prepare_data, resolve_data_dir
    from emseg_search.train.init_from import check_init_from, model_config

    exp_dir = Path(exp_dir).absolute()
    experiment_json = exp_dir / "experiment.json"
    recorded = read_experiment_json(exp_dir) if resume else {}
    if resume:
        check_resume_space(recorded, space, experiment_json)
    probe = space.trial_config(space.random_params(np.random.default_rng(0)), data=data)
    data_dir = str(resolve_data_dir(probe))
    prepared, loaded, fingerprint = prepare_data(probe.model_copy(update={"data": data_dir}))
    data_info = {
        "data": data_dir,
        "split": {
            "train": len(prepared.train),
            "val": len(prepared.val),
            "source": prepared.split_source,
        },
        "data_fingerprint": compute_fingerprint(loaded.items).model_dump(),
    }
    if resume:
        check_resume_data(recorded, data_info, experiment_json)
    for values in space.combinations(("encoder", "encoder_weights")):  # before Ray starts
        check_weights_available(model_config(TrialConfig.model_validate(values)))
    for values in space.combinations((*MODEL_FIELDS, "target", "init_from")):
        check_init_from(TrialConfig.model_validate(values))
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage.open(exp_dir, storage_uri)
    if not storage.is_local:
        storage.check_writable()
    cluster = init_ray(address, verbose=verbose)
    use_gpu = space.resources.gpus_per_worker > 0
    if use_gpu and not cluster.get("GPU"):
        raise ClusterError(
            f"space {space.name!r} asks for {space.resources.gpus_per_worker:g} GPU(s) per "
            f"worker (resources.gpus_per_worker), but the Ray cluster has none "
            f"({cluster.get('CPU', 0):g} CPUs); set gpus_per_worker: 0 or use --address to "
            "join a cluster with GPUs"
        )
    limit = concurrency(space, cluster)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_experiment_json(
        exp_dir,
        {
            "name": exp_dir.name,
            "space": space.to_dict(),  # on --resume: equal but for an extended budget
            **data_info,
            "versions": versions(),
            "git_commit": _git_commit(),
            "cluster_resources": cluster,
            "storage": None if storage_uri is None else strip_credentials(storage_uri),
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
        prepared=prepared,
        fingerprint=fingerprint,
    )
    trainable = tune.with_parameters(run_trial, context=context)
    trainable = tune.with_resources(trainable, trial_resources(space))
    with _console(verbose):
        tuner = _build_tuner(
            trainable, space, exp_dir, storage, context, limit, max_failures, resume, verbose
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


def _build_tuner(
    trainable: Any,
    space: SearchSpace,
    exp_dir: Path,
    storage: Storage,
    context: SearchContext,
    limit: int,
    max_failures: int,
    resume: bool,
    verbose: bool,
) -> Any:
    """The Tuner of a new search, or the restored one of the search in ``storage``."""
    from ray import tune

    from emseg_search.search.progress import ConsoleProgress, SilentReporter
    from emseg_search.search.recorder import TableRecorder

    experiment_json = exp_dir / "experiment.json"
    remote_fs = None if storage.is_local else storage.fs
    if resume:
        # Tune restores its own configuration (callbacks, verbosity, search algorithm) as the
        # search started; the budget comes from experiment.json (algorithms.BudgetedSearch)
        return tune.Tuner.restore(
            storage.path(TUNE_DIR),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=remote_fs,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            search_alg=build_search(space, exp_dir, max_concurrent=limit),
            scheduler=build_scheduler(space),
            num_samples=space.budget.num_samples,
            # no reuse_actors: a reused trial driver whose Train run is still shutting
            # down fails its reset (counted as a trial failure) or keeps training
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=storage.root,
            storage_filesystem=remote_fs,
            callbacks=[
                TableRecorder(exp_dir, context),
                ConsoleProgress(space, str(experiment_json)),
            ],
            # the space's time_budget_s, read from experiment.json (--resume may extend it)
            stop=TimeBudget(str(experiment_json)),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=None if verbose else 0,  # None: Tune's default tables
            progress_reporter=None if verbose else SilentReporter(),
        ),
    )
