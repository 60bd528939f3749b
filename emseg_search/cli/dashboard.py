"""`python -m emseg_search dashboard [RESULTS_DIR] [--host H] [--port P]` =
`python -m emseg_search.dashboard ...`: serve the live results dashboard (read-only)."""

from __future__ import annotations

from emseg_search.cli.common import command
from emseg_search.dashboard.serve import main as serve


@command
def main(argv: list[str] | None = None) -> int:
    """Serve the dashboard until interrupted; 0 done, 2 bad input."""
    return serve(argv, prog="emseg-search dashboard")


if __name__ == "__main__":
    raise SystemExit(main())
