"""Pareto fronts: which trials no other trial beats on every objective at once.

A trial dominates another when it is at least as good on every objective and better on one;
the front is the set of trials nothing dominates. Equal trials do not dominate each other, so
ties and duplicates are all on the front (as in Optuna's ``study.best_trials``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# trials.parquet statuses a front is computed over: a pruned, stopped, running or failed
# trial did not finish its epochs, so its scores are not comparable with finished ones
FRONT_STATUSES = ("completed",)


def pareto_mask(values: np.ndarray, maximise: Sequence[bool] | None = None) -> np.ndarray:
    """(N, K) objective values -> (N,) bool: True where no other row dominates the row.

    ``maximise[k]`` says whether objective k is better high (default: all). A row with a NaN
    is never on the front and dominates nothing.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be (N, K), got shape {values.shape}")
    signs = np.ones(values.shape[1]) if maximise is None else np.where(maximise, 1.0, -1.0)
    if len(signs) != values.shape[1]:
        raise ValueError(f"{len(signs)} directions for {values.shape[1]} objectives")
    pts = values * signs  # all better high from here on
    ok = ~np.isnan(pts).any(axis=1)
    front = np.zeros(len(pts), bool)
    idx = np.flatnonzero(ok)
    kept = pts[ok]
    for i, p in zip(idx, kept, strict=True):
        front[i] = not np.any(np.all(kept >= p, axis=1) & np.any(kept > p, axis=1))
    return front


def objective_column(metric: str) -> str:
    """The trials.parquet column an objective is read from: ``best_<metric>``."""
    return f"best_{metric}"


def pareto_flags(
    rows: Sequence[Mapping[str, Any]], objectives: Mapping[str, str]
) -> list[bool | None]:
    """trials.parquet rows -> each one's ``pareto`` value for ``objectives`` ({metric: 'max' |
    'min'}): over the completed trials with a finite value of every objective, True on the
    front and False off it; False for every other row. None for all rows without objectives."""
    if not objectives:
        return [None] * len(rows)
    columns = [objective_column(m) for m in objectives]
    values = np.array(
        [
            [_number(r.get(c)) for c in columns]
            if r.get("status") in FRONT_STATUSES
            else [np.nan] * len(columns)
            for r in rows
        ],
        dtype=float,
    ).reshape(len(rows), len(columns))
    values[~np.isfinite(values)] = np.nan  # an infinite score is a broken one
    mask = pareto_mask(values, [mode == "max" for mode in objectives.values()])
    return [bool(m) for m in mask]


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan
