"""The dashboard's command line: parse the options, check the folder, serve (Flask's threaded
server; read-only, loopback by default)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050


def build_parser(prog: str = "python -m emseg_search.dashboard") -> argparse.ArgumentParser:
    """Options of the dashboard."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a live, read-only web dashboard over a results folder: experiments, "
        "leaderboards, learning curves, parameter charts and trial views of the Parquet tables. "
        "Polls the tables and updates the page while a search runs. Every asset is served "
        "locally (works offline).",
    )
    p.add_argument(
        "results",
        nargs="?",
        type=Path,
        default=Path(os.environ.get("EMSEG_RESULTS_DIR", "results")),
        help="the results folder ($EMSEG_RESULTS_DIR, else ./results)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind ({DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the "
        "results to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    p.add_argument(
        "--poll", type=float, default=2.0, help="seconds between checks for new results (2)"
    )
    return p


def main(argv: list[str] | None = None, prog: str = "python -m emseg_search.dashboard") -> int:
    """Serve until interrupted; 0 on Ctrl-C, 2 on bad input."""
    args = build_parser(prog).parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results}: no such results folder", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536 or args.poll <= 0:
        print("error: --port must be in 1..65535 and --poll > 0", file=sys.stderr)
        return 2
    try:
        from emseg_search.dashboard.app import build_app
    except ImportError as exc:
        print(
            f"error: the dashboard needs Dash ({exc}); install the extra: "
            "pip install 'emseg-search[dashboard]'",
            file=sys.stderr,
        )
        return 2
    app = build_app(args.results, poll_ms=int(args.poll * 1000))
    print(
        f"emseg-search dashboard over {args.results.resolve()}: "
        f"http://{args.host}:{args.port}/  (Ctrl-C stops it)",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        app.run(host=args.host, port=args.port, debug=False)
    return 0
