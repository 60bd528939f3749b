"""Optuna samplers that Tune can snapshot: it pickles the searcher with its sampler."""

from __future__ import annotations

import threading
from typing import Any

import optuna


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II, picklable: optuna 5's holds a ``threading.Lock`` (its generation
    cache's), which pickle refuses; the copy gets a lock of its own."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, told trials the way Tune tells them (``study.tell`` outside
    ``study.optimize``). Optuna's stops the study when the grid's last trial ends, which
    outside ``optimize`` raises RuntimeError: a pruned last trial then broke the search, a
    completed one logged a warning. Here the search's ``num_samples`` (the grid's size)
    ends it instead."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None
