"""`python tests/faults/inject.py FAULT FAULT_DIR [run options...]`: `emseg-search run` with one
fault injected, for the fault-injection suite (tests/faults/, benchmarks/fault_injection.py).

The fault code lives here, in tests/, and nowhere in the package, so nothing a user sets can
enable it: this script replaces a few of the search driver's functions in its own process before
calling the ordinary `run` command. The Tune trainable is replaced by a wrapper defined in this
``__main__`` module, which cloudpickle ships to the Ray trial processes by value (functions of
``__main__`` are pickled with their code), so trial-side faults run there without any hook in
the package either.

FAULT (at most once per search):
  none                 no fault
  trial-raises         the second trial to start raises on every attempt
  record-pids          every trial attempt writes FAULT_DIR/<trial_id>.<pid> (the test kills it)
  kill-during-trial    the driver SIGKILLs itself once the first epoch row is written
  kill-between-trials  ... once the first finished trial is in the tables
  kill-writing-table   ... while writing epochs.parquet (half its bytes in the temporary file)
  kill-copying-best    ... while replacing best/ (the copy done, not yet renamed into place)
  unwritable           the experiment folder turns read-only (mode 0555) after the first epoch
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def die() -> None:
    """SIGKILL this process: no clean-up, no atexit, no flush (a preempted node)."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def trainable_wrapper(real: Any, fault: str, fault_dir: str) -> Any:
    """The Tune trainable with ``fault`` injected; runs in the trial process."""

    def trial(params: dict[str, Any], context: Any) -> None:
        import ray.tune

        trial_id = ray.tune.get_context().get_trial_id()
        if fault == "record-pids":
            Path(fault_dir, f"{trial_id}.{os.getpid()}").touch()
        if fault == "trial-raises" and _is_second_trial(Path(fault_dir), trial_id):
            raise RuntimeError(f"injected fault: trial {trial_id} raises on purpose")
        return real(params, context)

    return trial


def _is_second_trial(fault_dir: Path, trial_id: str) -> bool:
    """Whether ``trial_id`` is the second trial to start (trials run one at a time); its
    retries too."""
    (fault_dir / f"seen.{trial_id}").touch()
    raiser = fault_dir / "raiser"
    if not raiser.exists() and len(list(fault_dir.glob("seen.*"))) == 2:
        raiser.write_text(trial_id)
    return raiser.exists() and raiser.read_text() == trial_id


def install(fault: str, fault_dir: str) -> None:
    """Replace the driver's functions that ``fault`` needs (in this process)."""
    import emseg_search.search.driver as driver
    import emseg_search.search.recorder as recorder
    from emseg_search.search.recorder import TableRecorder

    if fault in ("trial-raises", "record-pids"):
        driver.run_trial = trainable_wrapper(driver.run_trial, fault, fault_dir)
    elif fault in ("kill-during-trial", "unwritable"):
        on_result = TableRecorder.on_trial_result

        def on_trial_result(self: TableRecorder, *args: Any, **kwargs: Any) -> None:
            on_result(self, *args, **kwargs)
            if self.epochs:
                if fault == "kill-during-trial":
                    die()
                if not Path(fault_dir, "done").exists():
                    Path(fault_dir, "done").touch()
                    os.chmod(self.exp_dir, 0o555)

        TableRecorder.on_trial_result = on_trial_result
    elif fault == "kill-between-trials":
        on_complete = TableRecorder.on_trial_complete

        def on_trial_complete(self: TableRecorder, *args: Any, **kwargs: Any) -> None:
            on_complete(self, *args, **kwargs)
            die()

        TableRecorder.on_trial_complete = on_trial_complete
    elif fault == "kill-writing-table":
        write_table = recorder.write_table

        def torn_write(rows: list, schema: Any, path: Any) -> Any:
            if Path(path).name == "epochs.parquet" and len(rows) >= 2:
                import io

                import pyarrow as pa
                import pyarrow.parquet as pq

                from emseg_search.atomic import atomic_path

                buf = io.BytesIO()
                columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
                pq.write_table(pa.Table.from_pydict(columns, schema=schema), buf)
                with atomic_path(path) as tmp:
                    tmp.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                    die()
            return write_table(rows, schema, path)

        recorder.write_table = torn_write
    elif fault == "kill-copying-best":
        atomic_dir = driver.atomic_dir

        @contextlib.contextmanager
        def killed_atomic_dir(target: Any) -> Iterator[Path]:
            with atomic_dir(target) as tmp:
                yield tmp
                target = Path(target)
                if target.exists():  # the worst moment: the old best/ renamed aside
                    os.replace(target, target.with_name(f".{target.name}.old"))
                die()

        driver.atomic_dir = killed_atomic_dir
    elif fault != "none":
        raise SystemExit(f"inject.py: unknown fault {fault!r}")


def main(argv: list[str]) -> int:
    """Install the fault, then run the search as `emseg-search run` does."""
    fault, fault_dir, *run_args = argv
    Path(fault_dir).mkdir(parents=True, exist_ok=True)
    install(fault, fault_dir)
    from emseg_search.cli.run import main as run

    return run(run_args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
