"""`python -m emseg_search.run [SPACE.yaml]`: the search (= `emseg-search run`, see cli/run.py)."""

from __future__ import annotations

from emseg_search.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
