"""How Tune runs a search's trials: the resources each takes, how many run at once, the Optuna
searcher (trials ASHA stops are PRUNED; the study is exported to optuna.db), the trial budget
and time budget (both read from experiment.json, so --resume may extend them) and the ASHA
scheduler."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import ray
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from emseg_search.atomic import atomic_path
from emseg_search.space.spec import SearchSpace

TRIAL_DRIVER_MEMORY = 64 * 1024**2  # bytes reserved per trial driver (a scheduling token)
# OptunaSearch state that PruningOptunaSearch reads: Ray has no public API for the Optuna trial
# of a Tune trial, nor for which trials were already told (tests/search/test_algorithms.py)
OPTUNA_SEARCH_PRIVATE = ("_ot_trials", "_completed_trials")


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


def recorded_budget(experiment_json: Path) -> dict[str, Any] | None:
    """``space.budget`` as experiment.json records it, or None when it cannot be read."""
    try:
        budget = json.loads(experiment_json.read_text(encoding="utf-8"))["space"]["budget"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return budget if isinstance(budget, dict) else None


def build_search(space: SearchSpace, exp_dir: Path, max_concurrent: int) -> BudgetedSearch:
    """Tune's search algorithm: the Optuna searcher (see ``PruningOptunaSearch``) behind a
    ConcurrencyLimiter, in a SearchGenerator whose trial budget --resume can raise."""
    objectives = space.objectives or {}  # several: a multi-objective study; ASHA keeps metric
    searcher = PruningOptunaSearch(
        max_epochs=space.scheduler.max_epochs,
        export_to=str(exp_dir / "optuna.db"),
        space=space.define_by_run(),
        metric=list(objectives) or space.metric,
        mode=list(objectives.values()) or space.mode,
        sampler=space.build_sampler(),
        study_name=space.name,
    )
    return BudgetedSearch(
        ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
        experiment_json=str(exp_dir / "experiment.json"),
    )


class BudgetedSearch(SearchGenerator):
    """Tune's SearchGenerator, except that a restored search runs as many trials as
    experiment.json's ``space.budget.num_samples`` says.

    Tuner.restore keeps the num_samples the search started with, so a --resume that raised it
    (search/driver.py allows only raising it) would otherwise be ignored.
    """

    def __init__(self, searcher: Any, experiment_json: str) -> None:
        super().__init__(searcher)
        self.experiment_json = experiment_json

    def set_state(self, state: dict) -> None:
        """Tune's saved state (on restore), with the recorded trial budget if it is larger."""
        budget = recorded_budget(Path(self.experiment_json)) or {}
        wanted = int(budget.get("num_samples") or 0)
        super().set_state({**state, "total_samples": max(state["total_samples"], wanted)})


def with_epochs_trained(result: dict | None) -> dict | None:
    """``result`` with ``training_iteration`` = the epochs the trial has trained (its reported
    ``epoch`` + 1; results without one as they are).

    Tune counts the reports of a trial's current process: a trial retried after a crash
    (--max-failures) or restored by --resume continues from its own checkpoint while Tune's
    count starts again at 1, so a trial that trained every epoch looked stopped early (PRUNED in
    optuna.db) and ASHA ranked its epochs at the wrong rungs (found by tests/faults/).
    """
    if result is None or result.get("epoch") is None:
        return result
    return {**result, "training_iteration": int(result["epoch"]) + 1}


class EpochASHA(ASHAScheduler):
    """ASHA over the epochs a trial has trained (``with_epochs_trained``), not over Tune's
    count of its reports, which restarts when a trial is retried or resumed."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        """ASHA's decision at the trial's epoch."""
        return super().on_trial_result(tune_controller, trial, with_epochs_trained(result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        """ASHA's bookkeeping of the trial's last epoch."""
        super().on_trial_complete(tune_controller, trial, with_epochs_trained(result))


class TimeBudget(Stopper):
    """Stops the whole search once experiment.json's ``space.budget.time_budget_s`` (read at the
    first check of each run, so a --resume may raise or remove it; none: no limit) has passed.

    As with Tune's own ``time_budget_s``, the clock starts at the first check of this run, so a
    resumed search gets the budget again.
    """

    def __init__(self, experiment_json: str) -> None:
        self.experiment_json = experiment_json
        self._deadline: float | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        """No single trial is stopped here."""
        return False

    def stop_all(self) -> bool:
        """Whether the time budget is spent."""
        if self._deadline is None:
            budget = recorded_budget(Path(self.experiment_json)) or {}
            seconds = budget.get("time_budget_s")
            self._deadline = math.inf if seconds is None else time.monotonic() + float(seconds)
        return time.monotonic() >= self._deadline

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the stopper with the Tuner: a restored one reads the budget again
        return {**self.__dict__, "_deadline": None}


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped before ``max_epochs`` as PRUNED, not COMPLETE,
    names each Optuna trial's Tune trial (user attribute ``tune_trial_id``), and exports the
    study to SQLite after each finished trial and whenever Tune snapshots the searcher with a
    study that changed (so a trial still running at the end of the search is in the file).

    With several objectives (a ``metric`` list), Optuna is told each completed trial's values
    at its best epoch (highest val_score, as trials.parquet's ``best_*`` columns and the
    trial's model), not at its last one, so that the study's Pareto front is the table's; a
    diverged trial is FAIL.

    The study lives in an in-memory storage made here (Optuna's default), inside the searcher
    state that Tune snapshots together with its own, so a resumed search sees both as of one
    moment.
    """

    def __init__(
        self, max_epochs: int, export_to: str, study_name: str, sampler: Any, **kwargs: Any
    ) -> None:
        import optuna

        # one object, pickled once with the study: the restored searcher shares it again
        self._study_storage = optuna.storages.InMemoryStorage()
        super().__init__(
            study_name=study_name, sampler=sampler, storage=self._study_storage, **kwargs
        )
        missing = [name for name in OPTUNA_SEARCH_PRIVATE if not hasattr(self, name)]
        if missing:
            raise RuntimeError(
                f"ray {ray.__version__}: OptunaSearch no longer has {', '.join(missing)}, which "
                "search/algorithms.py PruningOptunaSearch reads; install the Ray version "
                "pyproject.toml names or update PruningOptunaSearch"
            )
        self._study_name_ = study_name
        self._study_sampler = sampler
        self._max_epochs = max_epochs
        self._export_to = export_to
        self._exported: tuple = ()
        # multi-objective: trial id -> (val_score, objective values) of its best epoch so far
        self._best_values: dict[str, tuple[float, list[float]]] = {}

    def study(self) -> Any:
        """The Optuna study (a handle on this searcher's storage)."""
        import optuna

        return optuna.load_study(
            study_name=self._study_name_, storage=self._study_storage, sampler=self._study_sampler
        )

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

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """An epoch's result: Optuna's intermediate value (one objective), or the trial's
        best epoch so far (several objectives: Optuna takes no intermediate values then).
        The intermediate value's step is the epoch (``with_epochs_trained``)."""
        if not isinstance(self.metric, list):
            super().on_trial_result(trial_id, with_epochs_trained(result))
            return
        self._note_best_epoch(trial_id, result)

    def _note_best_epoch(self, trial_id: str, result: dict) -> None:
        """Keep the result's objective values if it is the trial's best epoch so far (the
        first of the highest val_score, else val_iou, as the recorder picks it)."""
        score = _finite(result.get("val_score"))
        score = score if score is not None else _finite(result.get("val_iou"))
        best = getattr(self, "_best_values", {})
        better = score is not None and (trial_id not in best or score > best[trial_id][0])
        if better and not result.get("diverged"):
            best[trial_id] = (score, [_finite(result.get(m)) for m in self.metric])
        self._best_values = best

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell Optuna how the trial ended, then export the study."""
        import optuna

        result = with_epochs_trained(result)
        stopped_early = (
            not error
            and result is not None
            and not result.get("diverged")
            and result.get("training_iteration", self._max_epochs) < self._max_epochs
        )
        untold = trial_id in self._ot_trials and trial_id not in self._completed_trials
        if isinstance(self.metric, list) and result:
            # Tune gives the result that ends a trial (ASHA's STOP at max_t) only here
            self._note_best_epoch(trial_id, result)
        if stopped_early and untold:
            number = self._ot_trials[trial_id].number
            self.study().tell(number, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
        elif isinstance(self.metric, list) and untold and not error:
            values = getattr(self, "_best_values", {}).get(trial_id, (None, [None]))[1]
            number = self._ot_trials[trial_id].number
            if (result or {}).get("diverged") or any(v is None for v in values):
                self.study().tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                self.study().tell(number, values)
            self._completed_trials.add(trial_id)
        else:
            super().on_trial_complete(trial_id, result=result, error=error)
        self.export()

    def export(self) -> None:
        """Copy the in-memory study to the SQLite file, atomically (temp file + rename)."""
        import optuna

        if not self._export_to:
            return
        self._exported = self._study_key()
        # SQLite takes the empty temporary file for an empty database
        with atomic_path(self._export_to) as tmp:
            optuna.copy_study(
                from_study_name=self._study_name_,
                from_storage=self._study_storage,
                to_storage=f"sqlite:///{tmp}",
            )

    def _study_key(self) -> tuple:
        """What the export shows of each trial: its state and how many epochs it reported."""
        return tuple(
            (t.number, t.state, len(t.intermediate_values))
            for t in self.study().get_trials(deepcopy=False)
        )


def _finite(value: Any) -> float | None:
    """A float, or None for a missing, NaN or infinite value."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


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
    """ASHA over epochs (``EpochASHA``), or None (FIFO)."""
    sch = space.scheduler
    if sch.type == "none":
        return None
    return EpochASHA(
        time_attr="training_iteration",
        max_t=sch.max_epochs,
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
    )
