"""How Tune runs a search's trials: the resources each takes, how many run at once, the Optuna
searcher (trials ASHA stops are PRUNED; the study is exported to optuna.db) and the ASHA
scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from emseg_search.space.spec import SearchSpace

TRIAL_DRIVER_MEMORY = 64 * 1024**2  # bytes reserved per trial driver (a scheduling token)


def trial_resources(space: SearchSpace) -> dict[str, float]:
    """What Tune reserves for one trial's own process.

    An inline trial trains in it, so it takes the worker's CPUs/GPUs. A TorchTrainer trial
    only waits on its Train workers: it takes no CPU, so the workers get every CPU (ENV.md:
    1 CPU per trial driver stalls a 2-CPU machine; even 0.01 CPU leaves 1.99, too few for a
    2-CPU worker); a token of memory gives the bundle a resource.
    """
    res = space.resources
    if res.inline:
        return {
            "CPU": res.cpus_per_worker,
            **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {}),
        }
    return {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY}


def concurrency(space: SearchSpace, cluster: dict[str, float]) -> int:
    """How many trials fit the cluster at once: their Train workers need real CPUs/GPUs."""
    res = space.resources
    fits = int(cluster.get("CPU", 1) // (res.workers * res.cpus_per_worker))
    if res.gpus_per_worker:
        fits = min(fits, int(cluster.get("GPU", 0) // (res.workers * res.gpus_per_worker)))
    limit = space.budget.max_concurrent_trials
    return max(1, min(fits, limit) if limit else fits)


def build_searcher(space: SearchSpace, exp_dir: Path) -> Any:
    """OptunaSearch over the space's define-by-run function (TPE or random, seeded).

    The study lives in memory, inside the searcher state that Tune snapshots together with its
    own, so a resumed search sees both as of one moment; after every finished trial it is
    exported to optuna.db (for optuna-dashboard). Trials that ASHA stops early are told to
    Optuna as PRUNED with their intermediate values.
    """
    return PruningOptunaSearch(
        max_epochs=space.scheduler.max_epochs,
        export_to=str(exp_dir / "optuna.db"),
        space=space.define_by_run(),
        metric=space.metric,
        mode=space.mode,
        sampler=space.searcher.build_sampler(),
        study_name=space.name,
    )


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped before ``max_epochs`` as PRUNED, not COMPLETE,
    names each Optuna trial's Tune trial (user attribute ``tune_trial_id``), and exports the
    study to SQLite after each finished trial and whenever Tune snapshots the searcher with a
    study that changed (so a trial still running at the end of the search is in the file)."""

    def __init__(self, max_epochs: int, export_to: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_epochs = max_epochs
        self._export_to = export_to
        self._exported: tuple = ()

    def suggest(self, trial_id: str) -> dict | None:
        """Optuna's parameters for a new Tune trial, which its Optuna trial is labelled with."""
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return params

    def save(self, checkpoint_path: str) -> None:
        """Tune's snapshot of the searcher (every few seconds, and last when the search ends):
        also export the study if it changed since the last export."""
        super().save(checkpoint_path)
        if self._study_key() != getattr(self, "_exported", ()):  # absent in older snapshots
            self.export()

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell Optuna how the trial ended, then export the study."""
        import optuna

        stopped_early = (
            not error
            and result is not None
            and not result.get("diverged")
            and result.get("training_iteration", self._max_epochs) < self._max_epochs
        )
        if stopped_early and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
        else:
            super().on_trial_complete(trial_id, result=result, error=error)
        self.export()

    def export(self) -> None:
        """Copy the in-memory study to the SQLite file, atomically (temp file + rename)."""
        import optuna

        if self._ot_study is None or not self._export_to:
            return
        self._exported = self._study_key()
        target = Path(self._export_to)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        optuna.copy_study(
            from_study_name=self._ot_study.study_name,
            from_storage=self._ot_study._storage,
            to_storage=f"sqlite:///{tmp}",
        )
        tmp.replace(target)

    def _study_key(self) -> tuple:
        """What the export shows of each trial: its state and how many epochs it reported."""
        if self._ot_study is None:
            return ()
        return tuple(
            (t.number, t.state, len(t.intermediate_values))
            for t in self._ot_study.get_trials(deepcopy=False)
        )


def settle_study_export(path: Path) -> int:
    """After the search: trials the exported study still lists as RUNNING (cut by the time
    budget, or by an interruption) are PRUNED there, with their last reported value, as the
    results tables call them 'stopped'. A resumed search exports its own study over it.
    Returns how many were settled."""
    import optuna
    from optuna.trial import TrialState

    if not path.is_file():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    try:
        settled = 0
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study.tell(trial.number, state=TrialState.PRUNED)
                settled += 1
        return settled
    finally:
        storage.remove_session()
        storage.engine.dispose()


def build_scheduler(space: SearchSpace) -> Any:
    """ASHA over epochs, or None (FIFO)."""
    from ray.tune.schedulers import ASHAScheduler

    sch = space.scheduler
    if sch.type == "none":
        return None
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=sch.max_epochs,
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
    )
