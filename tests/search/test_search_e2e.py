"""End-to-end searches through the CLI: tables, leaderboard, kill + --resume, ray job submit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from helpers import cli_env, write_tiny_space

from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.results.io import load_experiment, read_table

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def tiny_space(path: Path, data: Path, num_samples: int, max_epochs: int, workers: int = 1) -> Path:
    """A CPU space small enough for CI: 64 px tiles on 64 px synthetic images."""
    return write_tiny_space(
        path, data, num_samples=num_samples, max_epochs=max_epochs, workers=workers
    )


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emseg_search.run", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_data(tmp_path_factory.mktemp("d") / "synth", n=24, seed=5, size=64)


def test_killed_search_resumes_without_losing_or_duplicating(data: Path, tmp_path: Path) -> None:
    """Killed mid-search, then resumed with a larger trial budget (what --resume may extend)."""
    space = tiny_space(tmp_path / "tiny.yaml", data, num_samples=4, max_epochs=2)
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emseg_search.run", str(space), "--results", str(results)],
        cwd=REPO,
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trials_file = results / "tiny" / "trials.parquet"
    deadline = time.time() + 300
    done = pd.DataFrame()
    while time.time() < deadline and proc.poll() is None:
        time.sleep(2)
        if trials_file.is_file():
            done = read_table(trials_file).to_pandas()  # the search rewrites it meanwhile
            if (done["status"].isin(["completed", "pruned"])).sum() >= 1:
                break
    assert proc.poll() is None, "the search ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # driver, its local Ray and every trial
    proc.wait()
    finished_before = done[done["status"].isin(["completed", "pruned"])]
    assert len(finished_before) >= 1
    epochs_before = read_table(results / "tiny" / "epochs.parquet").to_pandas()

    tiny_space(space, data, num_samples=5, max_epochs=2)
    out = run_cli(str(space), "--results", str(results), "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    exp = load_experiment(results / "tiny")
    trials, epochs = exp["trials"], exp["epochs"]
    assert trials["trial_id"].is_unique and len(trials) == 5, trials[["trial_id", "status"]]
    assert exp["experiment"]["space"]["budget"]["num_samples"] == 5
    assert set(trials["status"]) <= {"completed", "pruned"}
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    merged = epochs_before.merge(epochs, on=["trial_id", "epoch"], suffixes=("", "_after"))
    assert len(merged) == len(epochs_before)  # nothing recorded before the kill was lost
    assert (results / "tiny" / "best" / "weights.pt").is_file()
    assert "leaderboard" in out.stdout


def test_time_budget_stops_a_trial_and_keeps_its_model(data: Path, tmp_path: Path) -> None:
    """A trial still training when the search's time budget runs out is 'stopped' (not left
    'running') and keeps the model of its last checkpoint, which best/ may then be."""
    space = tiny_space(tmp_path / "tiny.yaml", data, num_samples=2, max_epochs=500)
    spec = yaml.safe_load(space.read_text())
    spec["budget"]["time_budget_s"] = 20
    space.write_text(yaml.safe_dump(spec, sort_keys=False))
    results = tmp_path / "results"
    out = run_cli(str(space), "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    trials = load_experiment(results / "tiny")["trials"]
    statuses = trials[["trial_id", "status", "epochs_run"]]
    assert set(trials["status"]) <= {"stopped", "pruned"}, statuses  # none left 'running'
    trained = trials[(trials["status"] == "stopped") & (trials["epochs_run"] > 0)]
    assert len(trained) >= 1 and (trained["epochs_run"] < 500).all()
    for model_dir in trained["model_dir"]:
        assert (Path(model_dir) / "weights.pt").is_file()
    assert (results / "tiny" / "best" / "weights.pt").is_file()
    # the Optuna study agrees: every trial is in optuna.db, none left RUNNING
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'tiny/optuna.db'}")
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in study.trials}
    assert set(trained["trial_id"]) <= set(states), states
    assert {states[t] for t in trained["trial_id"]} == {"PRUNED"}, states
    assert "RUNNING" not in states.values(), states
    # the default console: one line per event, none of Tune's tables or Optuna's INFO lines
    assert "trial 1/2 started: arch=" in out.stdout and "search ended" in out.stdout
    assert "Trial status" not in out.stdout and "A new study" not in out.stdout + out.stderr


def test_multi_worker_trials_train_data_parallel(data: Path, tmp_path: Path) -> None:
    """2 workers per trial: each trial is a TorchTrainer (DDP over 2 ranks), not inline."""
    space = tiny_space(tmp_path / "tiny.yaml", data, num_samples=1, max_epochs=2, workers=2)
    results = tmp_path / "results"
    # --verbose: the workers' own output reaches the console (the default keeps it in Ray's logs)
    out = run_cli(str(space), "--results", str(results), "--verbose")
    assert out.returncode == 0, out.stderr[-3000:]
    trials = load_experiment(results / "tiny")["trials"]
    assert list(trials["status"]) == ["completed"]
    run_dir = results / "tiny" / "trials" / trials["trial_id"].iloc[0]
    assert (run_dir / "model" / "weights.pt").is_file()
    # Ray Train's own checkpoint bookkeeping: the trial ran through a TorchTrainer
    assert (run_dir / "checkpoint_manager_snapshot.json").is_file(), sorted(os.listdir(run_dir))
    assert "world size 2" in out.stdout + out.stderr


def test_search_with_checkpoints_in_s3_and_resume_from_there(data: Path, tmp_path: Path) -> None:
    """--storage s3://...: checkpoints and Tune's state in the bucket (a local S3 server),
    tables and models in --results; --resume finds the storage in experiment.json."""
    from moto.server import ThreadedMotoServer
    from pyarrow import fs as pafs

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    creds = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(creds)  # for this process's S3 client; run_cli passes os.environ on
    try:
        s3 = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
        )
        s3.create_dir("emseg")
        place = f"s3://emseg/searches?endpoint_override=127.0.0.1:{port}&scheme=http"
        secret = "Sup3rS3cretK3y"  # credentials in the URI: never recorded or shown
        uri = place.replace("s3://", f"s3://test:{secret}@")  # pyarrow: access:secret@bucket
        space = tiny_space(tmp_path / "tiny.yaml", data, num_samples=2, max_epochs=1)
        results = tmp_path / "results"
        out = run_cli(str(space), "--results", str(results), "--storage", uri)
        assert out.returncode == 0, out.stderr[-3000:]
        assert secret not in out.stdout + out.stderr
        assert json.loads((results / "tiny" / "experiment.json").read_text())["storage"] == place
        for path in (results / "tiny").rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
        trials = load_experiment(results / "tiny")["trials"]
        assert len(trials) == 2 and set(trials["status"]) == {"completed"}
        for trial_id in trials["trial_id"]:
            found = s3.get_file_info(pafs.FileSelector(f"emseg/searches/tiny/trials/{trial_id}"))
            assert any(i.base_name.startswith("checkpoint_") for i in found)
            assert (results / "tiny" / "trials" / trial_id / "model" / "weights.pt").is_file()
        assert s3.get_file_info("emseg/searches/tiny/tune").type == pafs.FileType.Directory
        assert not (results / "tiny" / "tune").exists()  # nothing of Tune's state locally
        assert (results / "tiny" / "best" / "weights.pt").is_file()

        again = run_cli(str(space), "--results", str(results), "--resume")
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(load_experiment(results / "tiny")["trials"]) == 2
    finally:
        server.stop()
        for key in creds:
            os.environ.pop(key, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit(data: Path, tmp_path: Path) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    port, dash = _free_port(), _free_port()
    # every agent port too: another Ray on this machine (a lingering test cluster, a user's
    # search) holds the defaults, and a head whose dashboard agent cannot bind 52365 answers
    # every submission with "No available agent to submit job"
    agent_ports = [
        f"--{name}={_free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
    ]
    # --block keeps `ray start` in the foreground, in a session of its own: the test stops
    # this head and everything it started by that session, never with `ray stop`, which
    # would kill every Ray on the machine (a user's cluster, a running search)
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            *agent_ports,
            "--num-cpus=2",
            "--disable-usage-stats",
        ],
        env=cli_env(),
        stdout=(head_log := (tmp_path / "head.log").open("w")),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        results = tmp_path / "results"
        submit_cmd = [
            ray,
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{dash}",
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "-m",
            "emseg_search.run",
            "search_spaces/quick.yaml",
            "--smoke-test",
            "--data",
            str(data),
            "--results",
            str(results),
        ]
        # the head's dashboard can take minutes to come up on a loaded 2-core machine (seen:
        # over 120 s once in a full CI run, 60 s alone)
        deadline = time.time() + 300
        while True:
            submit = subprocess.run(
                submit_cmd, env=cli_env(), capture_output=True, text=True, timeout=600
            )
            # Until the head's dashboard and agent are up, a submission is refused and nothing
            # is submitted (cluster/README.md tells users to retry too); once a job was
            # submitted, its outcome stands.
            submitted = "submitted successfully" in submit.stdout + submit.stderr
            if submit.returncode == 0 or submitted or time.time() > deadline:
                break
            time.sleep(2)
        head_log.flush()
        said = (tmp_path / "head.log").read_text()[-2000:]
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:] + "\nhead:\n" + said
        assert "succeeded" in submit.stdout
        trials = load_experiment(results / "quick-smoke")["trials"]
        assert len(trials) == 2 and set(trials["status"]) <= {"completed", "pruned"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        head_log.close()
        # what `ray stop` would also do: forget this head, or a later ray.init() on this
        # machine tries to join it (and hangs on the dead address)
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_multi_objective_search_marks_its_pareto_front(data: Path, tmp_path: Path) -> None:
    """Three objectives (two scores and the forward pass's speed) with NSGA-II: trials.parquet's
    `pareto` column is an independent dominance check over its own best_* columns, and the
    exported Optuna study's Pareto front is the same trials."""
    space = tiny_space(tmp_path / "tiny.yaml", data, num_samples=3, max_epochs=1)
    spec = yaml.safe_load(space.read_text())
    spec["objectives"] = {
        "val_iou": "max",
        "val_particle_f1": "max",
        "val_ms_per_megapixel": "min",
    }
    spec["searcher"] = {"type": "nsga2", "seed": 0, "population_size": 2}
    space.write_text(yaml.safe_dump(spec, sort_keys=False))
    results = tmp_path / "results"
    out = run_cli(str(space), "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    trials = load_experiment(results / "tiny")["trials"]
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials
    columns = ["best_val_iou", "best_val_particle_f1", "best_val_ms_per_megapixel"]
    assert trials[columns].notna().all().all() and (trials["best_val_ms_per_megapixel"] > 0).all()
    # x dominates y: no worse on every objective, better on one (IoU and F1 up, ms down)
    pts = trials[columns].to_numpy() * [1, 1, -1]
    dominated = [
        any((pts[j] >= pts[i]).all() and (pts[j] > pts[i]).any() for j in range(len(pts)))
        for i in range(len(pts))
    ]
    assert trials["pareto"].tolist() == [not d for d in dominated]
    assert trials["pareto"].any()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'tiny/optuna.db'}")
    assert len(study.directions) == 3
    front = {t.user_attrs["tune_trial_id"] for t in study.best_trials}
    assert front == set(trials.loc[trials["pareto"], "trial_id"])
