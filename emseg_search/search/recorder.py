"""A Tune callback that keeps trials.parquet and epochs.parquet current while a search runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from emseg_search.results.io import read_rows, write_table
from emseg_search.results.pareto import pareto_flags
from emseg_search.results.schemas import EPOCH_METRICS, EPOCH_SCHEMA, trial_schema
from emseg_search.search.trainable import TRIALS_DIR, SearchContext
from emseg_search.train.checkpoint import HISTORY_FILE


def end_status(last_result: dict[str, Any], epochs_run: int, max_epochs: int) -> str:
    """How a trial that Tune reports complete ended: 'error' (diverged), 'pruned' (stopped by
    the scheduler before ``max_epochs``) or 'completed'."""
    if last_result.get("diverged"):
        return "error"
    return "pruned" if epochs_run < max_epochs else "completed"


def _finite(value: Any) -> float | None:
    """A float, or None for missing/NaN values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _score(epoch: dict[str, Any]) -> float | None:
    """What ranks an epoch: its val_score (val_iou in results from before val_score)."""
    score = _finite(epoch.get("val_score"))
    return score if score is not None else _finite(epoch.get("val_iou"))


class TableRecorder(Callback):
    """Writes one row per trial and one per trial x epoch, atomically, after every result.

    On --resume it starts from the tables on disk, so nothing recorded before is lost, and
    (trial_id, epoch) rows are never duplicated. The trials' data comes from ``context`` (what
    run_search resolved), not from reading the data set again.
    """

    def __init__(self, exp_dir: str | Path, context: SearchContext) -> None:
        self.exp_dir = Path(exp_dir)
        self.context = context
        self.space = context.space
        self.storage = context.storage
        self.schema = trial_schema(self.space.param_names)
        self.setup()

    def setup(self, **info: Any) -> None:
        """Start from the tables on disk (a restored callback may carry stale rows)."""
        self.trials = {r["trial_id"]: r for r in read_rows(self.exp_dir / "trials.parquet")}
        self.epochs = {
            (r["trial_id"], r["epoch"]): r for r in read_rows(self.exp_dir / "epochs.parquet")
        }
        self.params: dict[str, dict[str, Any]] = {}  # trial_id -> its sampled fields

    def _params(self, trial: Any) -> dict[str, Any]:
        """The trial's sampled TrialConfig fields (mapped from Optuna's names once per trial)."""
        if trial.trial_id not in self.params:
            self.params[trial.trial_id] = self.space.sampled_params(trial.config)
        return self.params[trial.trial_id]

    def _row(self, trial: Any) -> dict[str, Any]:
        row = self.trials.setdefault(
            trial.trial_id, {"trial_id": trial.trial_id, "status": "running", "epochs_run": 0}
        )
        for name, value in self._params(trial).items():
            row[f"params_{name}"] = value
        return row

    def _flush(self) -> None:
        rows = list(self.trials.values())
        # recomputed from every row at each write (a --resume's rows from disk included)
        for row, flag in zip(rows, pareto_flags(rows, self.space.objectives or {}), strict=True):
            row["pareto"] = flag
        write_table(rows, self.schema, self.exp_dir / "trials.parquet")
        rows = sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"]))
        write_table(rows, EPOCH_SCHEMA, self.exp_dir / "epochs.parquet")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial began (or was restored): it is 'running'."""
        self._row(trial)["status"] = "running"
        self._flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """One epoch finished: add its row, update the trial's best so far."""
        if "epoch" not in result:
            return
        row = self._row(trial)
        epoch = int(result["epoch"])
        self._backfill(trial.trial_id, epoch)
        self.epochs[(trial.trial_id, epoch)] = {
            "trial_id": trial.trial_id,
            **{k: result.get(k) for k in EPOCH_METRICS},
        }
        mine = [r for (t, _), r in self.epochs.items() if t == trial.trial_id]
        scored = [(_score(r), r) for r in mine if _score(r) is not None]
        if scored:
            best_score, best = max(scored, key=lambda p: p[0])
            row.update(
                best_val_iou=_finite(best.get("val_iou")),
                best_val_dice=_finite(best.get("val_dice")),
                best_val_score=best_score,
                best_val_robust_iou=_finite(best.get("val_robust_iou")),
                best_val_particle_f1=_finite(best.get("val_particle_f1")),
                best_val_panoptic_quality=_finite(best.get("val_panoptic_quality")),
                best_val_count_error=_finite(best.get("val_count_error")),
                best_val_ms_per_megapixel=_finite(best.get("val_ms_per_megapixel")),
                best_epoch=best["epoch"],
                last_val_iou=_finite(result.get("val_iou")),
                last_val_particle_f1=_finite(result.get("val_particle_f1")),
            )
        row["epochs_run"] = len(mine)
        row["train_seconds"] = float(sum(r.get("epoch_seconds") or 0.0 for r in mine))
        if result.get("diverged"):
            row["error"] = result.get("stop_reason")
        self._flush()

    def _backfill(self, trial_id: str, epoch: int) -> None:
        """Add the rows of the trial's epochs before ``epoch`` that the table lacks, from the
        epoch history of its latest checkpoint.

        A trial keeps training for a moment after the search's driver dies: an epoch it
        checkpointed then never reached the table, and the resumed trial continues after it
        (tests/faults: the driver SIGKILLed during a trial).
        """
        if all((trial_id, e) in self.epochs for e in range(epoch)):
            return
        for past in self._checkpoint_history(trial_id):
            done = int(past.get("epoch", epoch))
            if done < epoch and (trial_id, done) not in self.epochs:
                self.epochs[(trial_id, done)] = {
                    "trial_id": trial_id,
                    **{k: past.get(k) for k in EPOCH_METRICS},
                }

    def _checkpoint_history(self, trial_id: str) -> list[dict[str, Any]]:
        """The epoch history of the trial's latest checkpoint ([] when none or unreadable)."""
        checkpoint = self.storage.latest_checkpoint(f"{TRIALS_DIR}/{trial_id}")
        if checkpoint is None:
            return []
        try:
            with self.storage.fs.open_input_stream(f"{checkpoint}/{HISTORY_FILE}") as f:
                history = json.loads(f.read())
        except (OSError, ValueError):
            return []
        return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Completed all epochs, or stopped early by the scheduler (pruned)."""
        row = self._row(trial)
        last = trial.last_result or {}
        row["status"] = end_status(last, row.get("epochs_run", 0), self.space.scheduler.max_epochs)
        self._record_model(trial, row)
        self._flush()

    def _record_model(self, trial: Any, row: dict[str, Any]) -> None:
        """Write the trial's model artifact and put its folder (or why not) in ``row``."""
        try:
            model = self._write_model(trial)
        except Exception as exc:  # noqa: BLE001 - one broken checkpoint must not end the search
            model = None
            row["error"] = f"model artifact not written: {type(exc).__name__}: {exc}"[:500]
        row["model_dir"] = None if model is None else str(model)

    def _write_model(self, trial: Any) -> Path | None:
        """The trial's epochs.parquet and model artifact (in the experiment folder), from its
        last checkpoint (in the search's storage).

        Written here, by the driver, because the scheduler may stop a trial's function at
        any report, its last one included.
        """
        import tempfile

        from emseg_search.models.registry import required_stride
        from emseg_search.train.outputs import finish_run

        checkpoint = self.storage.latest_checkpoint(f"{TRIALS_DIR}/{trial.trial_id}")
        if checkpoint is None:
            return None
        cfg = self.context.trial_config(trial.config)
        prepared, fingerprint = self.context.trial_data(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            local = (
                Path(checkpoint)
                if self.storage.is_local
                else self.storage.download(checkpoint, tmp)
            )
            outcome = finish_run(
                cfg,
                self.exp_dir / "trials" / trial.trial_id,
                local,
                prepared,
                fingerprint,
                required_stride(cfg),
                trial_id=trial.trial_id,
            )
        return outcome.model_dir

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Settle the rows still 'running'.

        Tune stopped the trial at the end of the search (the time budget ran out, or the
        search was interrupted) without a trial-complete event: 'stopped', with the model of
        its last checkpoint (--resume sets it 'running' again and continues it). Tune does not
        know the trial: it started just before a kill, after Tune's last snapshot of the
        experiment, and --resume cannot restore it: 'error'.
        """
        known = {t.trial_id: t for t in trials}
        for trial_id, row in self.trials.items():
            if row["status"] != "running":
                continue
            trial = known.get(trial_id)
            if trial is None:
                row["status"] = "error"
                row["error"] = (
                    "interrupted: the search was killed before Ray Tune saved this "
                    "trial, so --resume could not restore it"
                )
            elif getattr(trial, "status", None) == Trial.TERMINATED:
                row["status"] = "stopped"
                self._record_model(trial, row)
        self._flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial failed for good (after its retries)."""
        row = self._row(trial)
        row["status"] = "error"
        row["error"] = trial_error_text(trial)
        self._flush()


def trial_error_text(trial: Any) -> str:
    """The last line of the trial's error (the exception message), or a generic note."""
    path = getattr(trial, "error_file", None) or getattr(trial, "pickled_error_file", None)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:1000] if lines else "trial failed (see the Tune logs under tune/)"
