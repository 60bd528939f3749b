"""Read-only web dashboard over a results folder: experiments, leaderboards, charts and trial
views of the Parquet tables, live while a search writes them (docs/dashboard.md).

``python -m emseg_search.dashboard [RESULTS_DIR]`` (= ``emseg-search dashboard``) serves it;
``build_app`` (dashboard.app) returns the Dash app. Needs the ``dashboard`` extra (Dash).
"""

from __future__ import annotations
