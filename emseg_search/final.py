"""`python -m emseg_search.final` = `python -m emseg_search final` (cli/final.py)."""

from __future__ import annotations

from emseg_search.cli.final import main

if __name__ == "__main__":
    raise SystemExit(main())
