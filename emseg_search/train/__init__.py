"""Training: plain-torch loops, the Ray Train worker loop, and the Train driver."""

from __future__ import annotations

from emseg_search.train.loops import DivergedError, evaluate, train_one_epoch

__all__ = ["DivergedError", "evaluate", "train_one_epoch"]
