"""The fault-injection scenarios: each runs a real tiny search (subprocesses: the search driver,
its own local Ray), injects one fault, recovers as a user would (nothing, or `--resume`) and
counts what was lost or duplicated with ``analysis.audit``. Shared by tests/faults/ and
benchmarks/fault_injection.py (``from faults.scenarios import ...`` with tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from helpers import cli_env, write_tiny_space

from emseg_search.analysis.audit import AuditReport, audit_experiment
from emseg_search.results.io import read_table

REPO = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).with_name("inject.py")
NAME = "faults"  # the experiment's name: results/<NAME>/
MOMENTS = {
    "kill-during-trial": "during a trial",
    "kill-between-trials": "between trials",
    "kill-writing-table": "while writing a table",
    "kill-copying-best": "while copying a model to best/",
}
DRIVER_KILLS = (
    "kill-during-trial",
    "kill-between-trials",
    "kill-writing-table",
    "kill-copying-best",
)


@dataclass
class FaultResult:
    """What one scenario measured."""

    fault: str
    trials_completed: int  # trials with status completed
    rows_lost: int  # trial or epoch rows recorded before the fault and absent after, + gaps
    rows_duplicated: int  # repeated trial ids + repeated (trial, epoch) rows
    recover_s: float | None  # the fault to the affected work continuing (None: not applicable)
    audit: AuditReport
    trials: pd.DataFrame
    epochs: pd.DataFrame
    outputs: list[subprocess.CompletedProcess] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def write_space(
    path: Path, data: Path, num_samples: int = 2, epochs: int = 2, workers: int = 1
) -> Path:
    """The tiny CI space with one trial at a time (each fault then hits a known moment) and no
    early stopping."""
    return write_tiny_space(
        path,
        data,
        name=NAME,
        num_samples=num_samples,
        max_epochs=epochs,
        workers=workers,
        archs=("unet", "fpn"),
        scheduler={"type": "none"},
        budget={"max_concurrent_trials": 1},
    )


def _without_root_override() -> list[str]:
    """A command prefix that drops root's permission to write anywhere (CAP_DAC_OVERRIDE), so
    a folder's mode 0555 holds for this process too (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override"]


def start_search(
    space: Path, results: Path, fault: str, fault_dir: Path, *extra: str, root_override: bool = True
) -> subprocess.Popen:
    """The search driver with ``fault`` injected, in a session (process group) of its own: its
    local Ray and every trial process belong to that group, and nothing else does."""
    prefix = [] if root_override else _without_root_override()
    cmd = [*prefix, sys.executable, str(INJECT), fault, str(fault_dir), str(space)]
    return subprocess.Popen(
        [*cmd, "--results", str(results), *extra],
        cwd=REPO,
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    """Wait for the driver, then kill what is left of its session (a driver killed by SIGKILL
    leaves its local Ray behind); its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        for pid in session_processes(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.wait()
    if proc.returncode is None:  # pragma: no cover - communicate raised
        out, err = "", ""
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def resume(space: Path, results: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`emseg-search run SPACE --resume` (no fault), and its wall time."""
    t0 = time.perf_counter()
    proc = start_search(space, results, "none", results.parent / "fault", "--resume")
    return finish(proc), time.perf_counter() - t0


Snapshot = tuple[set[str], dict[tuple[str, int], float]]
NOTHING: Snapshot = (set(), {})


def snapshot(exp: Path) -> Snapshot:
    """The trial ids, and the (trial, epoch) rows with their epoch_seconds (what says whether
    a row was trained again), that the tables hold now (empty when absent)."""
    trials: set[str] = set()
    epochs: dict[tuple[str, int], float] = {}
    with contextlib.suppress(FileNotFoundError):
        trials = set(read_table(exp / "trials.parquet").column("trial_id").to_pylist())
    with contextlib.suppress(FileNotFoundError):
        t = read_table(exp / "epochs.parquet").to_pydict()
        epochs = {
            (tid, e): s
            for tid, e, s in zip(t["trial_id"], t["epoch"], t["epoch_seconds"], strict=True)
        }
    return trials, epochs


def measure(
    fault: str,
    exp: Path,
    before: Snapshot,
    recover_s: float | None,
    outputs: list[subprocess.CompletedProcess],
    **extra: Any,
) -> FaultResult:
    """Audit the folder and count what was lost (relative to ``before``) or duplicated."""
    report = audit_experiment(exp)
    trials = read_table(exp / "trials.parquet").to_pandas()
    epochs = read_table(exp / "epochs.parquet").to_pandas()
    after_trials, after_epochs = snapshot(exp)
    lost = len(before[0] - after_trials) + len(before[1].keys() - after_epochs.keys())
    lost += report.missing_epochs
    # an epoch recorded before the fault and trained again after it (a restart from scratch
    # that overwrote it): not lost, not duplicated, but not what --resume promises either
    retrained = [k for k, s in before[1].items() if k in after_epochs and after_epochs[k] != s]
    return FaultResult(
        fault=fault,
        trials_completed=int((trials["status"] == "completed").sum()),
        rows_lost=lost,
        rows_duplicated=report.duplicated_trials + report.duplicated_epochs,
        recover_s=recover_s,
        audit=report,
        trials=trials,
        epochs=epochs,
        outputs=outputs,
        extra={"retrained": retrained, **extra},
    )


def wait_for(
    predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600, poll: float = 0.3
) -> None:
    """Poll ``predicate`` until true; AssertionError when the driver ended first or on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the search ended before the fault: {err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the moment of the fault")
        time.sleep(poll)


def epoch_rows(exp: Path) -> pd.DataFrame:
    """epochs.parquet now (empty when not written yet)."""
    try:
        return read_table(exp / "epochs.parquet").to_pandas()
    except (FileNotFoundError, OSError):
        return pd.DataFrame(columns=["trial_id", "epoch"])


def finish_timing_recovery(
    proc: subprocess.Popen, recovered: Callable[[], bool], since: float
) -> tuple[subprocess.CompletedProcess, float | None]:
    """Wait for the search to end while watching for ``recovered()`` to become true; the
    finished process and the seconds from ``since`` (the fault) until it did, or None."""
    seconds: list[float] = []

    def watch() -> None:
        while proc.poll() is None and not seconds:
            if recovered():
                seconds.append(time.monotonic() - since)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = finish(proc)
    watcher.join(timeout=5)
    return out, seconds[0] if seconds else None


# --- the scenarios -------------------------------------------------------------------------


def trial_raises(work: Path, data: Path) -> FaultResult:
    """One trial raises on every attempt: an error row with its message, the search goes on."""
    space = write_space(work / "space.yaml", data, num_samples=3)
    results = work / "results"
    out = finish(start_search(space, results, "trial-raises", work / "fault"))
    return measure("trial raises", results / NAME, NOTHING, None, [out])


def trial_process_killed(work: Path, data: Path) -> FaultResult:
    """The Ray process of a 1-worker trial is SIGKILLed (found by its PID) after its first
    epoch: Tune retries it (--max-failures 1) from its last checkpoint."""
    space = write_space(work / "space.yaml", data, num_samples=2, epochs=3)
    results, fault_dir = work / "results", work / "fault"
    exp = results / NAME
    proc = start_search(space, results, "record-pids", fault_dir)
    wait_for(lambda: len(epoch_rows(exp)) >= 1, proc)
    (pid_file,) = [p for p in fault_dir.iterdir() if "." in p.name]
    trial_id, pid = pid_file.name.rsplit(".", 1)
    before = snapshot(exp)
    os.kill(int(pid), signal.SIGKILL)
    killed_at = time.monotonic()
    rows = len(before[1])
    mine_before = sum(t == trial_id for t, _ in before[1])
    out, recovered = finish_timing_recovery(
        proc, lambda: (epoch_rows(exp)["trial_id"] == trial_id).sum() > mine_before, killed_at
    )
    attempts = sorted(p.name for p in fault_dir.iterdir() if p.name.startswith(trial_id))
    return measure(
        "Ray trial process SIGKILLed",
        exp,
        before,
        recovered,
        [out],
        trial_id=trial_id,
        attempts=attempts,
        rows_at_kill=rows,
    )


def train_worker_killed(work: Path, data: Path) -> FaultResult:
    """A Ray Train worker of a 2-worker trial is SIGKILLed after the trial's first epoch: the
    trial is retried and its worker group restarts from the checkpoint."""
    space = write_space(work / "space.yaml", data, num_samples=1, epochs=3, workers=2)
    results = work / "results"
    exp = results / NAME
    proc = start_search(space, results, "none", work / "fault")
    wait_for(lambda: len(epoch_rows(exp)) >= 1, proc)
    pids = train_workers(proc.pid)
    assert pids, "no ray::RayTrainWorker in the search's session"
    before = snapshot(exp)
    os.kill(pids[-1], signal.SIGKILL)
    killed_at = time.monotonic()
    out, recovered = finish_timing_recovery(
        proc, lambda: len(epoch_rows(exp)) > len(before[1]), killed_at
    )
    return measure(
        "Ray Train worker SIGKILLed (2 workers)",
        exp,
        before,
        recovered,
        [out],
        killed=pids[-1],
    )


def session_processes(sid: int, name: bytes = b"") -> list[int]:
    """PIDs of the processes of session ``sid`` (the search driver started with
    start_new_session: its local Ray and every Ray worker, whose process groups are their own)
    whose command line starts with ``name``; another search's processes on the machine are in
    other sessions."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == sid:
            continue
        try:
            mine = os.getsid(int(proc.name)) == sid
            if mine and (proc / "cmdline").read_bytes().startswith(name):
                found.append(int(proc.name))
        except OSError:
            continue
    return sorted(found)


def train_workers(sid: int) -> list[int]:
    """PIDs of the ray::RayTrainWorker processes of the search whose driver is ``sid``."""
    return session_processes(sid, b"ray::RayTrainWorker")


def driver_killed(work: Path, data: Path, fault: str) -> FaultResult:
    """The search driver SIGKILLs itself at the moment ``fault`` names (its local Ray and
    trials go with it, as on a preempted node), then `--resume` completes the experiment."""
    space = write_space(work / "space.yaml", data, num_samples=2)
    results = work / "results"
    exp = results / NAME
    first = finish(start_search(space, results, fault, work / "fault"))
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-3000:])
    before = snapshot(exp)
    again, seconds = resume(space, results)
    return measure(f"driver SIGKILLed {MOMENTS[fault]}", exp, before, seconds, [first, again])


def checkpoint_truncated(work: Path, data: Path) -> FaultResult:
    """The driver is killed during a trial, then that trial's checkpoint (state.pt) is cut to
    half before `--resume`: the trial ends in an error naming the file, nothing restarts from
    scratch over its recorded epochs, and the other trial completes."""
    space = write_space(work / "space.yaml", data, num_samples=2)
    results = work / "results"
    exp = results / NAME
    first = finish(start_search(space, results, "kill-during-trial", work / "fault"))
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-3000:])
    before = snapshot(exp)
    (state,) = sorted((exp / "trials").glob("*/checkpoint_*/state.pt"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    again, seconds = resume(space, results)
    return measure("checkpoint truncated before --resume", exp, before, seconds, [first, again],
                   truncated=state)  # fmt: skip


def results_unwritable(work: Path, data: Path) -> FaultResult:
    """The experiment folder turns read-only after the first epoch: the search stops with a
    clear error, the tables stay readable, and once the folder is writable again `--resume`
    completes the experiment."""
    space = write_space(work / "space.yaml", data, num_samples=2)
    results = work / "results"
    exp = results / NAME
    proc = start_search(space, results, "unwritable", work / "fault", root_override=False)
    try:
        out = finish(proc)
        before = snapshot(exp)  # readable while still read-only
        readable = audit_experiment(exp, load_model=False)
    finally:
        os.chmod(exp, 0o755)
    again, seconds = resume(space, results)
    return measure("results folder turns read-only", exp, before, seconds, [out, again],
                   audit_while_read_only=readable)  # fmt: skip


def readers_during_writes(work: Path, data: Path) -> FaultResult:
    """pandas (plain and through load_experiment) and the dashboard's loader read the tables
    in a loop while a search writes them; torn reads counted per reader."""
    from emseg_search.dashboard.data import TableCache, load
    from emseg_search.results.io import load_experiment

    space = write_space(work / "space.yaml", data, num_samples=3)
    results = work / "results"
    exp = results / NAME
    proc = start_search(space, results, "none", work / "fault")
    readers: dict[str, Callable[[], Any]] = {
        "load_experiment": lambda: load_experiment(exp),
        "dashboard": lambda: load(results, NAME, TableCache()),
        "pd.read_parquet": lambda: (
            pd.read_parquet(exp / "trials.parquet"),
            pd.read_parquet(exp / "epochs.parquet"),
        ),
    }
    counts = {name: [0, 0] for name in readers}  # reads, torn
    errors: dict[str, str] = {}
    while proc.poll() is None:
        if not (exp / "epochs.parquet").is_file():
            time.sleep(0.2)
            continue
        for name, read in readers.items():
            try:
                read()
                counts[name][0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a torn read here
                counts[name][1] += 1
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        time.sleep(0.02)  # 2 cores: leave the search some CPU
    out = finish(proc)
    result = measure("readers during writes", exp, NOTHING, None, [out])
    result.extra.update(counts=counts, errors=errors)
    return result


SCENARIOS: dict[str, Callable[[Path, Path], FaultResult]] = {
    "trial-raises": trial_raises,
    "trial-process-killed": trial_process_killed,
    "train-worker-killed": train_worker_killed,
    **{f: (lambda work, data, f=f: driver_killed(work, data, f)) for f in DRIVER_KILLS},
    "checkpoint-truncated": checkpoint_truncated,
    "results-unwritable": results_unwritable,
    "readers-during-writes": readers_during_writes,
}
