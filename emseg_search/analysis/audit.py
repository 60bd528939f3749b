"""The integrity audit of a search's folder: whether its tables, its Optuna study and its best
model agree, after whatever happened to the search (a crash, a kill, a --resume, a copy).

``audit_experiment`` is what ``emseg-search audit RESULTS/NAME`` prints and what the
fault-injection suite (tests/faults/, benchmarks/fault_injection.py) checks after every fault:

- every trial once in trials.parquet, with a known status (none 'running' once the search
  finished);
- every (trial, epoch) once in epochs.parquet, the epochs of each trial contiguous from 0 to its
  last, as many as its ``epochs_run``, and only for trials of trials.parquet;
- optuna.db holding each trial once (user attribute ``tune_trial_id``), in a state that agrees
  with the table's status, a finished trial's value equal to its last epoch's metric, and no
  trial RUNNING once the search finished;
- best/ naming (file TRIAL) the trial of the highest selection score, and loading with the
  project's artifact loader.

It reads files only: no Ray, no training.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from emseg_search.results.io import read_table, selection_score
from emseg_search.results.schemas import TRIAL_STATUSES

# trials.parquet status -> the Optuna states it may have in optuna.db. A diverged trial is
# 'error' in the table and told to Optuna with its (last) value, so COMPLETE or PRUNED.
OPTUNA_STATES = {
    "completed": {"COMPLETE"},
    "pruned": {"PRUNED"},
    "stopped": {"PRUNED", "RUNNING"},  # RUNNING only while the search runs
    "error": {"FAIL", "COMPLETE", "PRUNED"},
    "running": {"RUNNING"},
}
# an error row of a trial that Tune never saved (recorder.on_experiment_end): it cannot be in
# the study that --resume restored
UNSAVED_TRIAL = "interrupted:"


@dataclass
class AuditReport:
    """What ``audit_experiment`` found: counts and one line per problem (none: consistent)."""

    path: Path
    trials: int = 0
    epochs: int = 0
    duplicated_trials: int = 0  # rows of trials.parquet beyond the first per trial_id
    duplicated_epochs: int = 0  # rows of epochs.parquet beyond the first per (trial, epoch)
    missing_epochs: int = 0  # gaps in a trial's epochs 0..last
    finished: bool = False  # experiment.json has finished_at
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # harmless: leftovers of an interruption

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def to_text(self) -> str:
        """A few lines for the console."""
        head = (
            f"{self.path}: {self.trials} trials, {self.epochs} epoch rows, "
            f"{'finished' if self.finished else 'not finished'}: "
            + ("consistent" if self.ok else f"{len(self.problems)} problem(s)")
        )
        lines = [head, *(f"  problem: {p}" for p in self.problems)]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def audit_experiment(path: str | Path, load_model: bool = True) -> AuditReport:
    """Check a search's folder (see the module docstring); ``load_model=False`` skips loading
    best/ (which builds the model)."""
    path = Path(path)
    report = AuditReport(path)
    info = _experiment_json(path, report)
    report.finished = bool(info.get("finished_at"))
    trials = _read(path / "trials.parquet", report)
    epochs = _read(path / "epochs.parquet", report)
    if trials is None:
        return report
    if epochs is None:
        epochs = pd.DataFrame(columns=["trial_id", "epoch"])
    report.trials = int(trials["trial_id"].nunique())
    report.epochs = len(epochs)
    _check_trials(trials, report)
    _check_epochs(trials, epochs, report)
    space = info.get("space") or {}
    # several objectives: Optuna holds each trial's values at its best epoch (not compared)
    metric = None if space.get("objectives") else space.get("metric", "val_iou")
    study_name = space.get("name")
    _check_study(path / "optuna.db", study_name, trials, epochs, metric, report)
    _check_best(path, trials, report, load_model)
    _note_leftovers(path, report)
    return report


def _experiment_json(path: Path, report: AuditReport) -> dict[str, Any]:
    file = path / "experiment.json"
    if not file.is_file():
        report.problems.append(f"{file}: missing")
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.problems.append(f"{file}: unreadable ({exc})")
        return {}
    return data if isinstance(data, dict) else {}


def _read(file: Path, report: AuditReport) -> pd.DataFrame | None:
    """The table as pandas, or None (a problem) when missing or torn."""
    if not file.is_file():
        report.problems.append(f"{file}: missing")
        return None
    try:
        return read_table(file).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any parse failure is a torn or foreign file
        report.problems.append(f"{file}: unreadable ({type(exc).__name__}: {exc})")
        return None


def _check_trials(trials: pd.DataFrame, report: AuditReport) -> None:
    dup = trials["trial_id"].duplicated()
    report.duplicated_trials = int(dup.sum())
    if dup.any():
        report.problems.append(
            f"trials.parquet: trial(s) listed more than once: "
            f"{sorted(set(trials.loc[dup, 'trial_id']))}"
        )
    unknown = sorted(set(trials["status"]) - set(TRIAL_STATUSES))
    if unknown:
        report.problems.append(f"trials.parquet: unknown status(es) {unknown}")
    if report.finished and (trials["status"] == "running").any():
        running = sorted(trials.loc[trials["status"] == "running", "trial_id"])
        report.problems.append(f"trials.parquet: the search finished, but {running} 'running'")
    errors = trials[(trials["status"] == "error") & trials["error"].isna()]
    if len(errors):
        report.problems.append(
            f"trials.parquet: error row(s) without a message: {sorted(errors['trial_id'])}"
        )


def _check_epochs(trials: pd.DataFrame, epochs: pd.DataFrame, report: AuditReport) -> None:
    dup = epochs.duplicated(["trial_id", "epoch"])
    report.duplicated_epochs = int(dup.sum())
    if dup.any():
        pairs = sorted(map(tuple, epochs.loc[dup, ["trial_id", "epoch"]].values.tolist()))
        report.problems.append(f"epochs.parquet: (trial, epoch) rows repeated: {pairs[:10]}")
    strays = sorted(set(epochs["trial_id"]) - set(trials["trial_id"]))
    if strays:
        report.problems.append(f"epochs.parquet: rows of trials not in trials.parquet: {strays}")
    runs = trials.drop_duplicates("trial_id").set_index("trial_id")["epochs_run"]
    for trial_id, group in epochs.groupby("trial_id"):
        seen = sorted(set(int(e) for e in group["epoch"]))
        gaps = sorted(set(range(seen[-1] + 1)) - set(seen))
        report.missing_epochs += len(gaps)
        if gaps:
            report.problems.append(f"epochs.parquet: trial {trial_id} misses epoch(s) {gaps}")
        run = runs.get(trial_id)
        if run is not None and not pd.isna(run) and int(run) != len(seen):
            report.problems.append(
                f"trial {trial_id}: epochs_run {int(run)} in trials.parquet, "
                f"{len(seen)} epoch rows in epochs.parquet"
            )
    for trial_id, run in runs.items():
        if trial_id not in set(epochs["trial_id"]) and not pd.isna(run) and int(run) > 0:
            report.missing_epochs += int(run)
            report.problems.append(
                f"trial {trial_id}: epochs_run {int(run)}, but no row in epochs.parquet"
            )


def _check_study(
    db: Path,
    study_name: str | None,
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    metric: str | None,
    report: AuditReport,
) -> None:
    """optuna.db against trials.parquet (see OPTUNA_STATES); a COMPLETE trial's value against
    its last epoch's ``metric`` (None: not compared)."""
    if not db.is_file():
        if len(trials):
            report.problems.append(f"{db}: missing, with {len(trials)} trial(s) in the table")
        return
    found = _study_trials(db, study_name, report)
    if found is None:
        return
    by_id: dict[str, list[tuple[str, float | None]]] = {}
    for tune_id, state, value in found:
        by_id.setdefault(tune_id, []).append((state, value))
    twice = sorted(t for t, seen in by_id.items() if len(seen) > 1)
    if twice:
        report.problems.append(f"optuna.db: Tune trial(s) in the study more than once: {twice}")
    table = trials.drop_duplicates("trial_id").set_index("trial_id")
    absent = sorted(set(by_id) - set(table.index))
    if absent:
        report.problems.append(f"optuna.db: trial(s) not in trials.parquet: {absent}")
    last_epoch = epochs.sort_values("epoch").drop_duplicates("trial_id", keep="last")
    last = last_epoch.set_index("trial_id")
    for trial_id, row in table.iterrows():
        status = row["status"]
        if trial_id not in by_id:
            unsaved = status == "error" and str(row.get("error") or "").startswith(UNSAVED_TRIAL)
            if not unsaved:
                report.problems.append(f"optuna.db: trial {trial_id} ({status}) is missing")
            continue
        state, value = by_id[trial_id][0]
        allowed = OPTUNA_STATES.get(status, set())
        if report.finished:
            allowed = allowed - {"RUNNING"}
        if state not in allowed:
            report.problems.append(
                f"optuna.db: trial {trial_id} is {state}, trials.parquet says {status}"
            )
        if state == "COMPLETE" and metric in last.columns and trial_id in last.index:
            want = last.loc[trial_id, metric]
            if value is None or pd.isna(want) or not math.isclose(value, float(want), abs_tol=1e-9):
                report.problems.append(
                    f"optuna.db: trial {trial_id} value {value}, its last epoch's {metric} {want}"
                )


def _study_trials(
    db: Path, study_name: str | None, report: AuditReport
) -> list[tuple[str, str, float | None]] | None:
    """(tune_trial_id, state name, value) of every trial of the study in ``db``."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_compatibility_check=True)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
        if not names:
            report.problems.append(f"{db}: holds no study")
            return None
        name = study_name if study_name in names else names[0]
        study = optuna.load_study(study_name=name, storage=storage)
        out = []
        for t in study.get_trials(deepcopy=False):
            tune_id = t.user_attrs.get("tune_trial_id")
            if tune_id is None:
                report.problems.append(f"optuna.db: trial #{t.number} names no Tune trial")
                continue
            # several objectives: values at the trial's best epoch, not compared here
            value = t.values[0] if t.values and len(t.values) == 1 else None
            out.append((tune_id, t.state.name, value))
        return out
    except Exception as exc:  # noqa: BLE001 - a torn or foreign database is the finding
        report.problems.append(f"{db}: unreadable ({type(exc).__name__}: {exc})")
        return None
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _check_best(path: Path, trials: pd.DataFrame, report: AuditReport, load_model: bool) -> None:
    """best/ is the best trial's model, and loads (once the search finished)."""
    best = path / "best"
    scored = trials.assign(_score=selection_score(trials))
    scored = scored[scored["model_dir"].notna() & scored["_score"].notna()]
    if not best.is_dir():
        if report.finished and len(scored):
            report.problems.append(f"{best}: missing, though trials have models")
        return
    trial_file = best / "TRIAL"
    named = trial_file.read_text(encoding="utf-8").strip() if trial_file.is_file() else None
    if named is None:
        report.problems.append(f"{best / 'TRIAL'}: missing")
    elif named not in set(trials["trial_id"]):
        report.problems.append(f"{best}: names trial {named}, which trials.parquet lacks")
    elif report.finished and len(scored):
        top = scored["_score"].max()
        mine = scored.loc[scored["trial_id"] == named, "_score"]
        if mine.empty or not math.isclose(float(mine.iloc[0]), float(top)):
            report.problems.append(
                f"{best}: holds trial {named}, but the best score ({top:.4f}) is another's"
            )
    if load_model:
        from emseg_search.inference.artifact import load_artifact

        try:
            load_artifact(best)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            report.problems.append(f"{best}: does not load ({type(exc).__name__}: {exc})")


def _note_leftovers(path: Path, report: AuditReport) -> None:
    """Temporary files and folders of writes a crash interrupted (harmless; the next write of
    the same file removes nothing, so they are listed)."""
    left = sorted(p.name for p in path.iterdir() if p.name.startswith(".") and "tmp" in p.name)
    left += sorted(p.name for p in path.iterdir() if p.name.endswith(".old"))
    if left:
        report.notes.append(f"leftovers of interrupted writes (safe to delete): {left}")
