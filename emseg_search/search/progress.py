"""What a search shows on the console: one line per event (a trial started, with its sampled
parameters; an epoch scored; a trial ended, and how), each with the best score so far, the
time elapsed and an estimate of the time left. A Tune callback, in place of Tune's tables."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback, ProgressReporter

from emseg_search.search.algorithms import recorded_budget
from emseg_search.search.recorder import end_status, trial_error_text
from emseg_search.space.spec import SearchSpace

# Tune's statuses of a trial that will not run again
FINISHED = ("TERMINATED", "ERROR")

LABELS = {
    "val_iou": "val IoU",
    "val_dice": "val Dice",
    "val_score": "val score",
    "val_robust_iou": "val robust IoU",
    "val_particle_f1": "val particle F1",
    "val_panoptic_quality": "val PQ",
    "val_count_error": "val count error",
}


def format_seconds(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_params(params: dict[str, Any]) -> str:
    """'arch=unet lr=0.00111 ...' (floats to 3 significant digits)."""
    return " ".join(f"{k}={f'{v:.3g}' if isinstance(v, float) else v}" for k, v in params.items())


class SilentReporter(ProgressReporter):
    """A Tune progress reporter that never reports: the console is ConsoleProgress's."""

    def should_report(self, trials: list, done: bool = False) -> bool:
        """Never."""
        return False


class ConsoleProgress(Callback):
    """Prints one line per trial event to stdout (see the module docstring).

    The time left is an upper bound: every epoch not yet run, at the wall-clock time per epoch
    of this run so far, as if no trial were pruned, and no more than the time budget allows.
    """

    def __init__(self, space: SearchSpace, experiment_json: str | None = None) -> None:
        self.space = space
        self.experiment_json = experiment_json  # where a resumed search's budget is
        self.setup()

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        """A (re)started search: counts begin again; a resumed trial's epochs come with it."""
        self.total = total_num_samples or self.space.budget.num_samples
        budget = self.experiment_json and recorded_budget(Path(self.experiment_json))
        self.time_budget = (budget or {}).get("time_budget_s", self.space.budget.time_budget_s)
        self.start = time.monotonic()
        self.epochs: dict[str, int] = {}  # epochs each trial has finished
        self.epochs_run = 0  # epochs run since this process started the search
        self.ended: set[str] = set()
        self.started: set[str] = set()  # started or resumed by this process
        self.best: tuple[float, int] | None = None  # (metric, trial number)
        self.trial_bests: dict[str, float] = {}  # metrics the worker keeps no best of

    def _say(self, text: str) -> None:
        print(f"[{format_seconds(time.monotonic() - self.start):>6}] {text}", flush=True)

    def _number(self, trials: list, trial: Any) -> int:
        # Tune's tag begins with the trial's number in the search ("3_arch=unet,..."), which a
        # --resume keeps while it may list the restored trials in another order
        head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
        if head.isdigit():
            return int(head)
        for i, t in enumerate(trials):
            if t is trial or t.trial_id == trial.trial_id:
                return i + 1
        return len(trials) + 1

    def _name(self, trials: list, trial: Any) -> str:
        return f"trial {self._number(trials, trial)}/{self.total}"

    @property
    def _label(self) -> str:
        return LABELS.get(self.space.metric, self.space.metric)

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.space.mode == "max" else value < than

    def _count_restored(self, trials: list) -> None:
        """Trials a --resume restored already ended (Tune never starts them again): their best
        score counts for the best so far, and they have no epochs left."""
        for t in trials:
            if t.trial_id in self.started or getattr(t, "status", None) not in FINISHED:
                continue
            self.ended.add(t.trial_id)
            last = getattr(t, "last_result", None) or {}
            # the worker keeps a best of val_iou / val_score only; for the others, the last
            # epoch's value (a lower bound of the trial's best)
            best = last.get(f"best_{self.space.metric}", last.get(self.space.metric))
            if best is None or last.get("diverged") or not math.isfinite(float(best)):
                continue
            if self.best is None or self._better(float(best), self.best[0]):
                self.best = (float(best), self._number(trials, t))

    def _status(self, trials: list, left: bool = True) -> str:
        """'best val IoU 0.81 (trial 3), 2m10s elapsed, ~4m left at most'."""
        self._count_restored(trials)
        parts = []
        if self.best is not None:
            parts.append(f"best {self._label} {self.best[0]:.4f} (trial {self.best[1]})")
        elapsed = time.monotonic() - self.start
        parts.append(f"{format_seconds(elapsed)} elapsed")
        seconds = self.time_left(trials, elapsed) if left else None
        if seconds is not None:
            parts.append(f"~{format_seconds(seconds)} left at most")
        return ", ".join(parts)

    def time_left(self, trials: list, elapsed: float) -> float | None:
        """Seconds left at most (module docstring), or None before the first epoch."""
        max_epochs = self.space.scheduler.max_epochs
        unended = [t for t in trials if t.trial_id not in self.ended]
        epochs_left = sum(max(0, max_epochs - self.epochs.get(t.trial_id, 0)) for t in unended)
        epochs_left += max(0, self.total - len(trials)) * max_epochs
        budget = self.time_budget
        capped = math.inf if budget is None else max(0.0, float(budget) - elapsed)
        if not self.epochs_run:
            return None if math.isinf(capped) else capped
        return min(epochs_left * elapsed / self.epochs_run, capped)

    def _trial_best(self, trial_id: str, result: dict, value: float) -> float:
        """The trial's best score so far: the worker's ``best_<metric>`` where it reports one
        (val_iou, val_score), else the best this process has seen (the particle metrics)."""
        reported = result.get(f"best_{self.space.metric}")
        if reported is not None:
            return float(reported)
        seen = self.trial_bests.get(trial_id)
        if seen is None or self._better(value, seen):
            self.trial_bests[trial_id] = value
        return self.trial_bests[trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """'trial 2/8 started: arch=unet encoder=resnet18 ...'."""
        self.started.add(trial.trial_id)
        last = getattr(trial, "last_result", None) or {}
        if "epoch" in last:
            self.epochs[trial.trial_id] = int(last["epoch"]) + 1
        done = self.epochs.get(trial.trial_id, 0)
        how = f"resumed after epoch {done}" if done else "started"
        params = format_params(self.space.sampled_params(trial.config))
        self._say(f"{self._name(trials, trial)} {how}: {params}")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """'trial 2/8 epoch 3/4: val IoU 0.7712 (trial best 0.7712) | best ..., time'."""
        if "epoch" not in result:
            return
        epoch = int(result["epoch"]) + 1
        self.epochs[trial.trial_id] = epoch
        self.epochs_run += 1
        name = f"{self._name(trials, trial)} epoch {epoch}/{self.space.scheduler.max_epochs}"
        if result.get("diverged"):
            self._say(f"{name}: diverged ({result.get('stop_reason')}) | {self._status(trials)}")
            return
        value = result.get(self.space.metric)
        validated = result.get("val_epoch", result["epoch"]) == result["epoch"]
        if value is None or not validated or not math.isfinite(float(value)):
            score = "not validated this epoch"
        else:
            value = float(value)
            if self.best is None or self._better(value, self.best[0]):
                self.best = (value, self._number(trials, trial))
            trial_best = self._trial_best(trial.trial_id, result, value)
            score = f"{self._label} {value:.4f} (trial best {trial_best:.4f})"
        seconds = result.get("epoch_seconds")
        took = f" in {float(seconds):.1f} s" if seconds is not None else ""
        self._say(f"{name}: {score}{took} | {self._status(trials)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """'trial 2/8 completed' / 'pruned after 1/4 epochs' / 'error: diverged (...)'."""
        self.ended.add(trial.trial_id)
        last = getattr(trial, "last_result", None) or {}
        epochs, max_epochs = self.epochs.get(trial.trial_id, 0), self.space.scheduler.max_epochs
        how = {
            "error": f"error: diverged ({last.get('stop_reason')})",
            "pruned": f"pruned after {epochs}/{max_epochs} epochs",
            "completed": "completed",
        }[end_status(last, epochs, max_epochs)]
        best = last.get(f"best_{self.space.metric}", self.trial_bests.get(trial.trial_id))
        if best is not None and not last.get("diverged"):
            how += f", best {self._label} {float(best):.4f}"
        self._say(f"{self._name(trials, trial)} {how} | {self._status(trials)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """'trial 2/8 error: <the exception's last line>'."""
        self.ended.add(trial.trial_id)
        self._say(f"{self._name(trials, trial)} error: {trial_error_text(trial)}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """'search ended: 8 trials (5 completed, 3 pruned) in 4m10s ...'."""
        # a trial that ended before a --resume (restored finished) was not cut by this end
        cut = [t for t in trials if t.trial_id in self.started and t.trial_id not in self.ended]
        note = f"; {len(cut)} stopped by the end of the search" if cut else ""
        self._say(f"search ended: {len(trials)} trial(s){note} | {self._status(trials, False)}")
        sys.stdout.flush()
