"""`python -m emseg_search.dashboard [RESULTS_DIR] [--host H] [--port P]`: serve the dashboard."""

from __future__ import annotations

from emseg_search.dashboard.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
