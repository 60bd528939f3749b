"""`python -m emseg_search.dashboard`: serves the page on 127.0.0.1 by default; bad input is one
line and exit code 2; `emseg-search dashboard` is the same command."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from emseg_search.cli.main import COMMANDS
from emseg_search.dashboard.serve import DEFAULT_HOST, build_parser


def test_defaults_bind_the_loopback() -> None:
    args = build_parser().parse_args([])
    assert args.host == DEFAULT_HOST == "127.0.0.1" and args.port == 8050


def test_the_cli_has_the_subcommand() -> None:
    assert COMMANDS["dashboard"][0] == "emseg_search.cli.dashboard"


def test_a_missing_folder_is_bad_input(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emseg_search", "dashboard", str(tmp_path / "nosuch")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no such results folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_module_serves_the_page_on_127_0_0_1(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "e", n_trials=3, n_epochs=2)
    port = fake.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emseg_search.dashboard", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the dashboard did not start in 60 s"
                time.sleep(0.3)
        assert "emseg-search results" in page and "_dash-config" in page
        # bound to the loopback only: the port is free on the machine's other addresses
        others = {
            info[4][0]
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            if not info[4][0].startswith("127.")
        }
        for address in others:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((address, port)) != 0, f"listening on {address}"
    finally:
        proc.terminate()
        proc.wait(10)
