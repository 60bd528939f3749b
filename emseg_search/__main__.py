"""`python -m emseg_search <command> ...` (the same as `emseg-search <command> ...`)."""

from __future__ import annotations

from emseg_search.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
