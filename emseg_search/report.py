"""`python -m emseg_search.report` = `python -m emseg_search report` (cli/report.py)."""

from __future__ import annotations

from emseg_search.cli.report import main

if __name__ == "__main__":
    raise SystemExit(main())
