"""Fault injection (issue 18): each case runs a real tiny search, injects one fault, recovers as
a user would, and audits the experiment (analysis.audit): every trial once in trials.parquet,
no epoch row missing or duplicated, optuna.db agreeing with the tables, best/ loadable.

The scenarios are in scenarios.py (benchmarks/fault_injection.py runs them too); the faults are
injected by inject.py, which lives here and nowhere in the package (see its docstring).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults.scenarios import DRIVER_KILLS, SCENARIOS, FaultResult

from emseg_search.data.synth.default_set import ensure_synthetic_data

# a case runs up to two searches (a fault, then --resume): 10 min was too tight on a loaded
# 2-core machine
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_data(tmp_path_factory.mktemp("d") / "synth", n=12, seed=5, size=64)


def assert_intact(result: FaultResult) -> None:
    """Nothing lost, nothing duplicated, every table and the study in agreement."""
    assert result.audit.ok, result.audit.to_text()
    assert result.rows_lost == 0 and result.rows_duplicated == 0, result.audit.to_text()
    assert not result.extra["retrained"], result.extra  # resumed, never restarted over them


def test_a_trial_that_raises_is_an_error_row_and_the_search_goes_on(
    data: Path, tmp_path: Path
) -> None:
    result = SCENARIOS["trial-raises"](tmp_path, data)
    (out,) = result.outputs
    assert out.returncode == 0, out.stderr[-3000:]
    assert_intact(result)
    statuses = result.trials.set_index("trial_id")["status"]
    assert sorted(statuses) == ["completed", "completed", "error"], statuses
    error = result.trials.loc[result.trials["status"] == "error", "error"].iloc[0]
    assert "injected fault" in error and "raises on purpose" in error, error


def test_a_killed_trial_process_is_retried_from_its_checkpoint(data: Path, tmp_path: Path) -> None:
    result = SCENARIOS["trial-process-killed"](tmp_path, data)
    (out,) = result.outputs
    assert out.returncode == 0, out.stderr[-3000:]
    assert_intact(result)
    assert len(result.extra["attempts"]) == 2, result.extra  # killed once, retried once
    assert set(result.trials["status"]) == {"completed"}
    mine = result.epochs[result.epochs["trial_id"] == result.extra["trial_id"]]
    assert sorted(mine["epoch"]) == [0, 1, 2]
    assert result.recover_s is not None


def test_a_killed_train_worker_restarts_the_worker_group_from_the_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    result = SCENARIOS["train-worker-killed"](tmp_path, data)
    (out,) = result.outputs
    assert out.returncode == 0, out.stderr[-3000:]
    assert_intact(result)
    assert list(result.trials["status"]) == ["completed"]
    assert sorted(result.epochs["epoch"]) == [0, 1, 2]


@pytest.mark.parametrize("fault", DRIVER_KILLS)
def test_a_killed_driver_resumes_with_nothing_lost_or_duplicated(
    fault: str, data: Path, tmp_path: Path
) -> None:
    result = SCENARIOS[fault](tmp_path, data)
    _, again = result.outputs
    assert again.returncode == 0, again.stderr[-3000:]
    assert_intact(result)
    assert len(result.trials) == 2 and set(result.trials["status"]) == {"completed"}
    assert (result.audit.path / "best" / "weights.pt").is_file()


def test_a_truncated_checkpoint_is_an_error_naming_it_never_a_silent_restart(
    data: Path, tmp_path: Path
) -> None:
    result = SCENARIOS["checkpoint-truncated"](tmp_path, data)
    _, again = result.outputs
    assert again.returncode == 0, again.stderr[-3000:]
    assert_intact(result)
    truncated = result.extra["truncated"]
    trial_id = truncated.parents[1].name
    row = result.trials.set_index("trial_id").loc[trial_id]
    assert row["status"] == "error", row
    assert str(truncated) in row["error"] and "truncated" in row["error"], row["error"]
    # its epoch recorded before the kill is still the one recorded then: no restart over it
    assert row["epochs_run"] == 1
    others = result.trials[result.trials["trial_id"] != trial_id]
    assert set(others["status"]) == {"completed"}


def test_an_unwritable_results_folder_is_a_clear_error_and_tables_stay_readable(
    data: Path, tmp_path: Path
) -> None:
    result = SCENARIOS["results-unwritable"](tmp_path, data)
    out, again = result.outputs
    exp = result.audit.path
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"error: cannot write the results in {exp}" in out.stderr, out.stderr[-3000:]
    assert "--resume" in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
    # while read-only: the tables of the last write that succeeded, whole
    read_only = result.extra["audit_while_read_only"]
    assert not any("unreadable" in p for p in read_only.problems), read_only.to_text()
    assert read_only.epochs >= 1 and read_only.duplicated_epochs == 0
    # writable again, --resume completes it
    assert again.returncode == 0, again.stderr[-3000:]
    assert_intact(result)
    assert len(result.trials) == 2 and set(result.trials["status"]) == {"completed"}


def test_readers_never_see_a_torn_table_while_a_search_writes(data: Path, tmp_path: Path) -> None:
    result = SCENARIOS["readers-during-writes"](tmp_path, data)
    (out,) = result.outputs
    assert out.returncode == 0, out.stderr[-3000:]
    assert_intact(result)
    counts = result.extra["counts"]
    for reader in ("load_experiment", "dashboard"):
        reads, torn = counts[reader]
        assert reads > 10 and torn == 0, (reader, counts, result.extra["errors"])
