"""Starting Ray: a stale `ray start` record must not make a run hang at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from emseg_search.train.cluster import current_cluster_file, stale_cluster_address


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stale_cluster_address_tells_a_dead_head_from_a_live_one(tmp_path: Path) -> None:
    record = tmp_path / "ray_current_cluster"
    assert stale_cluster_address(record) is None  # no record: nothing to ignore
    port = dead_port()
    record.write_text(f"127.0.0.1:{port}\n")
    assert stale_cluster_address(record) == f"127.0.0.1:{port}"
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        record.write_text(f"127.0.0.1:{live.getsockname()[1]}")
        assert stale_cluster_address(record) is None  # a head that answers is joined
    record.write_text("not an address")
    assert stale_cluster_address(record) is None


@pytest.mark.parametrize(
    "env",
    [{}, {"TMPDIR": "/var/tmp/x"}, {"RAY_TMPDIR": "/srv/raytmp", "TMPDIR": "/var/tmp/x"}],
    ids=["default", "TMPDIR", "RAY_TMPDIR"],
)
def test_cluster_file_is_where_ray_keeps_it(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray has no public API for it: we compute the path, and this fails loudly when Ray
    moves it (or its private helper), so that current_cluster_file follows."""
    from ray._common.utils import get_ray_address_file

    for key in ("RAY_TMPDIR", "TMPDIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert current_cluster_file() == Path(get_ray_address_file(None))


@pytest.mark.ray
@pytest.mark.slow
def test_init_ray_starts_a_local_ray_past_a_stale_record() -> None:
    """A head killed without `ray stop` leaves its address behind; a plain ray.init() then
    tries to join it and hangs. init_ray says so and starts its own Ray."""
    # Ray's socket paths must stay short: a temp dir of its own under /tmp, not pytest's
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="rt") as tmp:
        (Path(tmp) / "ray").mkdir()
        (Path(tmp) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead_port()}")
        env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_ADDRESS": ""}
        code = (
            "from emseg_search.train.cluster import init_ray; import ray; "
            "print('CPUs', init_ray(num_cpus=1)['CPU']); ray.shutdown()"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CPUs 1.0" in done.stdout
    assert "which does not answer" in done.stderr  # a logging warning


LISTENING = """
import json, os, re, subprocess, ray
from pathlib import Path
from emseg_search.train.cluster import init_ray
init_ray(num_cpus=1)
dashboard = ray._private.worker.get_dashboard_url()
parents = {}
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        parents[int(stat.parent.name)] = int(fields[1])
    except (OSError, IndexError, ValueError):
        pass
ours = {os.getpid()}
while True:
    more = {pid for pid, ppid in parents.items() if ppid in ours} - ours
    if not more:
        break
    ours |= more
rows = []
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    local = line.split()[3]
    ip, port = local.rsplit(":", 1)
    for name, pid in re.findall(r'"([^"]+)",pid=(\\d+)', line):
        if int(pid) in ours:
            rows.append([name, ip.strip("[]"), int(port)])
print(json.dumps({"dashboard": dashboard, "rows": rows}))
ray.shutdown()
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_ray_serves_its_dashboard_on_loopback_only() -> None:
    """docs/security.md lists the ports a local search opens: Ray's dashboard (which can
    submit jobs) answers on 127.0.0.1 only; the GCS, raylet and workers listen on all
    interfaces (Ray cannot bind them elsewhere; its token authentication guards them)."""
    import json

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="rt") as tmp:
        env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_ADDRESS": ""}
        done = subprocess.run(
            [sys.executable, "-c", LISTENING], env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    host, port = found["dashboard"].removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1"
    on_port = {ip for _, ip, p in found["rows"] if p == int(port)}
    assert on_port == {"127.0.0.1"}, found["rows"]
    names = {proc for proc, *_ in found["rows"]}
    assert {"gcs_server", "raylet"} <= names, names  # the processes docs/security.md lists
