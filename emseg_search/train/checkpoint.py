"""The on-disk checkpoint of a training run: the one definition of its files.

A checkpoint folder holds the training state (model, optimiser, schedule, scaler, epoch and
best-so-far bookkeeping), the best weights so far and the epoch history. The history is written
last: a folder without it is an interrupted save or upload, never taken for a checkpoint.
Checkpoints may live in a shared bucket, so they are loaded with ``weights_only=True``: plain
tensors and containers, no pickled code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PREFIX = "checkpoint_"
STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"
HISTORY_FILE = "history.json"
COMPLETE_FILE = HISTORY_FILE  # written last


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: training state, best weights so far, epoch history."""

    state: dict[str, Any]
    best: dict[str, torch.Tensor]
    history: list[dict[str, Any]]


def save_checkpoint(
    folder: str | Path,
    state: dict[str, Any],
    best: dict[str, torch.Tensor],
    history: list[dict[str, Any]],
) -> None:
    """Write a checkpoint into ``folder`` (the history last, see the module docstring)."""
    folder = Path(folder)
    torch.save(state, folder / STATE_FILE)
    torch.save(best, folder / BEST_FILE)
    (folder / HISTORY_FILE).write_text(json.dumps(history), encoding="utf-8")


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    """The epoch history of a checkpoint folder."""
    return json.loads((Path(folder) / HISTORY_FILE).read_text(encoding="utf-8"))


def read_best(folder: str | Path) -> dict[str, torch.Tensor]:
    """The best weights so far of a checkpoint folder, on the CPU."""
    return torch.load(Path(folder) / BEST_FILE, map_location="cpu", weights_only=True)


def load_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Everything a resumed run needs from a checkpoint folder."""
    folder = Path(folder)
    state = torch.load(folder / STATE_FILE, map_location=device, weights_only=True)
    return Checkpoint(state, read_best(folder), read_history(folder))
