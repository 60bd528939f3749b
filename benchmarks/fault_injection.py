"""Fault injection: every fault of the suite (tests/faults/), N times each, on a real tiny search;
what was completed, lost, duplicated, and how long recovery took.

    python benchmarks/fault_injection.py [--runs 1] [--fault NAME ...] [--keep DIR]

Each run is one scenario of tests/faults/scenarios.py: a tiny search on 64 px synthetic images
(2-3 trials x 2-3 epochs, one trial at a time), one injected fault, the recovery a user would
make (none, or `--resume`), then the audit of the experiment folder (`emseg-search audit`).
Columns: trials completed (summed over the runs), rows lost and rows duplicated (trial and
epoch rows, summed; all must be 0), time to recover (mean over the runs: the fault until the
affected trial reports its next epoch, or the `--resume` run's wall time). Writes
benchmarks/results/fault_injection.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402
from faults.scenarios import SCENARIOS, FaultResult  # noqa: E402

RECOVERY = {  # what "time to recover" measures, per fault
    "trial-raises": "none needed: the search goes on",
    "trial-process-killed": "kill -> the trial's next epoch (Tune retry)",
    "train-worker-killed": "kill -> the trial's next epoch (worker group restart)",
    "checkpoint-truncated": "`--resume` run",
    "results-unwritable": "exit 1 with an error; `--resume` run once writable",
    "readers-during-writes": "none needed",
}


def outcome(result: FaultResult) -> str:
    """What the user sees, in a few words."""
    if result.fault == "readers during writes":
        counts = result.extra["counts"]
        return "; ".join(f"{n}: {t} torn of {r + t}" for n, (r, t) in counts.items())
    problems = len(result.audit.problems)
    codes = ",".join(str(o.returncode) for o in result.outputs)
    return f"exit {codes}; audit {'consistent' if not problems else f'{problems} problem(s)'}"


def _rewrite(path: str, stop: Any) -> None:
    """Rewrite an epochs table of 1..300 rows (atomically, as the search does) until ``stop``."""
    from emseg_search.results.io import write_table
    from emseg_search.results.schemas import EPOCH_SCHEMA

    i = 0
    while not stop.is_set():
        i += 1
        rows = [{"trial_id": f"t{j % 7}", "epoch": j, "val_iou": 0.5} for j in range(i % 300)]
        write_table(rows, EPOCH_SCHEMA, path)


def tight_loop_readers(folder: Path, seconds: float) -> dict[str, list[int]]:
    """Reads and torn reads per reader while another process rewrites a table back to back
    (far more often than a search does): the stress case for readers during writes."""
    import multiprocessing

    import pandas as pd

    from emseg_search.results.io import read_table, write_table
    from emseg_search.results.schemas import EPOCH_SCHEMA

    path = folder / "epochs.parquet"
    write_table([], EPOCH_SCHEMA, path)
    stop = multiprocessing.Event()
    writer = multiprocessing.Process(target=_rewrite, args=(str(path), stop))
    writer.start()
    counts = {"read_table (load_experiment, dashboard)": [0, 0], "pd.read_parquet": [0, 0]}
    readers = dict(zip(counts, (read_table, pd.read_parquet), strict=True))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for name, read in readers.items():
            try:
                read(path)
                counts[name][0] += 1
            except Exception:  # noqa: BLE001 - every failure is a torn read here
                counts[name][1] += 1
    stop.set()
    writer.join()
    return counts


def main() -> None:
    """Run the scenarios, print and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1, help="runs per fault (1)")
    p.add_argument("--fault", action="append", choices=sorted(SCENARIOS), help="(repeat)")
    p.add_argument("--keep", type=Path, help="keep the experiment folders here")
    p.add_argument(
        "--tight-loop-s",
        type=float,
        default=20.0,
        help="seconds of the back-to-back rewrite stress case (20)",
    )
    args = p.parse_args()
    from emseg_search.data.synth.default_set import ensure_synthetic_data

    base = Path(tempfile.mkdtemp(prefix="faults-")) if args.keep is None else args.keep
    data = ensure_synthetic_data(base / "data", n=12, seed=5, size=64)
    rows = []
    t_start = time.perf_counter()
    for name in args.fault or list(SCENARIOS):
        results = []
        for run in range(args.runs):
            t0 = time.perf_counter()
            result = SCENARIOS[name](base / f"{name}-{run}", data)
            print(f"{name} run {run + 1}: {outcome(result)} ({time.perf_counter() - t0:.0f} s)")
            if result.audit.problems:
                print(result.audit.to_text())
            results.append(result)
        times = [r.recover_s for r in results if r.recover_s is not None]
        rows.append(
            [
                results[0].fault,
                len(results),
                f"{sum(r.trials_completed for r in results)} of "
                f"{sum(len(r.trials) for r in results)}",
                sum(r.rows_lost for r in results),
                sum(r.rows_duplicated for r in results),
                f"{sum(times) / len(times):.1f} s" if times else "-",
                RECOVERY.get(name, "`--resume` run"),
                outcome(results[-1]),
            ]
        )
    folder = base / "tight-loop"
    folder.mkdir(parents=True, exist_ok=True)
    counts = tight_loop_readers(folder, args.tight_loop_s)
    shown = "; ".join(f"{n}: {t} torn of {r + t}" for n, (r, t) in counts.items())
    print(f"tables rewritten back to back for {args.tight_loop_s:.0f} s: {shown}")
    rows.append(
        [
            f"readers while a table is rewritten back to back ({args.tight_loop_s:.0f} s, "
            "no search)",
            1,
            "-",
            "-",
            "-",
            "-",
            "none needed",
            shown,
        ]
    )
    head = (
        f"# Fault injection\n\n`python benchmarks/fault_injection.py --runs {args.runs}` on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"(machine shared with other jobs while it ran); {time.perf_counter() - t_start:.0f} s "
        "in all. Rows lost and duplicated: trial and epoch rows, summed over the runs; time to "
        "recover: mean over the runs."
    )
    columns = [
        "fault",
        "runs",
        "trials completed (of all)",
        "rows lost",
        "rows duplicated",
        "time to recover",
        "recovery",
        "outcome (last run)",
    ]
    write_report("fault_injection", head, columns, rows)


if __name__ == "__main__":
    main()
