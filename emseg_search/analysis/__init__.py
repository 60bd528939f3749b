"""Comparative analysis of searches: pandas in, pandas and figures out (leaderboards,
importances, intervals and paired tests on held-out images, the HTML report). Reads results,
never Ray; runs models only for the report's pictures."""

from __future__ import annotations

from emseg_search.analysis.comparison import (
    AnalysisError,
    best_per_architecture,
    best_so_far,
    leaderboard,
    leaderboards,
    load_experiments,
    param_importances,
)
from emseg_search.analysis.intervals import compare_final, paired_difference

__all__ = [
    "AnalysisError",
    "best_per_architecture",
    "best_so_far",
    "compare_final",
    "leaderboard",
    "leaderboards",
    "load_experiments",
    "paired_difference",
    "param_importances",
]
