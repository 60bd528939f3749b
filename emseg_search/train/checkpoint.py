"""The on-disk checkpoint of a training run: the one definition of its files.

A checkpoint folder holds the training state (model, optimiser, schedule, scaler, epoch and
best-so-far bookkeeping), the best weights so far and the epoch history. The history is written
last: a folder without it is an interrupted save or upload, never taken for a checkpoint.
Checkpoints may live in a shared bucket, so they are loaded with ``weights_only=True``
(``load_tensor_file``: a file holding pickled code is refused, naming it): plain tensors and
containers. ``save_checkpoint`` therefore turns whatever else the state holds (numpy scalars,
paths) into plain Python values first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from emseg_search.models.state_dict import TensorFileError, load_tensor_file

CHECKPOINT_PREFIX = "checkpoint_"
STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"
HISTORY_FILE = "history.json"
COMPLETE_FILE = HISTORY_FILE  # written last


class CheckpointError(TensorFileError):
    """A checkpoint folder holds a file that cannot be loaded (truncated, damaged, or holding
    pickled code); the message names the file and what the user can do."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: training state, best weights so far, epoch history."""

    state: dict[str, Any]
    best: dict[str, torch.Tensor]
    history: list[dict[str, Any]]


def checkpoint_name(epoch: int) -> str:
    """The folder name of the checkpoint taken after ``epoch`` (names sort by epoch)."""
    return f"{CHECKPOINT_PREFIX}epoch_{int(epoch):06d}"


def is_complete(folder: str | Path) -> bool:
    """True when ``folder`` holds a whole checkpoint (its last file, the history, exists)."""
    return (Path(folder) / COMPLETE_FILE).is_file()


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder directly under the local folder ``root``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = sorted(
        p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and is_complete(p)
    )
    return found[-1] if found else None


def to_plain(value: Any, where: str = "state") -> Any:
    """``value`` with every leaf a tensor or a plain Python value that weights_only loading
    accepts (numpy scalars and arrays, paths and tuples are converted); ``where`` names the
    entry in the error for anything else."""
    if isinstance(value, torch.Tensor) or value is None:
        return value
    if isinstance(value, np.generic):  # before float: numpy.float64 subclasses it
        return value.item()
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            # a subclass (IntEnum, StrEnum) would be pickled by class: keep the plain value
            return kind(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        plain = {to_plain(k, where): to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        if not isinstance(value, OrderedDict):
            return plain
        # a module's state_dict: load_state_dict reads the layers' versions from _metadata
        ordered = OrderedDict(plain)
        if hasattr(value, "_metadata"):
            ordered._metadata = to_plain(value._metadata, f"{where}._metadata")
        return ordered
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"checkpoint {where}: cannot store a {type(value).__qualname__} ({value!r}); "
        "checkpoints hold tensors and plain values only (they load with weights_only=True)"
    )


def save_checkpoint(
    folder: str | Path,
    state: dict[str, Any],
    best: dict[str, torch.Tensor],
    history: list[dict[str, Any]],
) -> None:
    """Write a checkpoint into ``folder`` (the history last, see the module docstring)."""
    folder = Path(folder)
    torch.save(to_plain(state), folder / STATE_FILE)
    torch.save(to_plain(best, "best weights"), folder / BEST_FILE)
    (folder / HISTORY_FILE).write_text(json.dumps(to_plain(history, "history")), encoding="utf-8")


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    """The epoch history of a checkpoint folder (CheckpointError naming the file when it is
    not valid JSON: truncated or damaged)."""
    path = Path(folder) / HISTORY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(
            f"{path}: not a readable epoch history (truncated or damaged?): {exc}"
        ) from None


def read_best(folder: str | Path) -> dict[str, torch.Tensor]:
    """The best weights so far of a checkpoint folder, on the CPU."""
    return load_tensor_file(Path(folder) / BEST_FILE)


def read_hardware(folder: str | Path) -> dict[str, Any]:
    """Where the checkpoint's run trained (device, GPU, backend, world size, mixed precision);
    empty for checkpoints written before it was recorded."""
    state = load_tensor_file(Path(folder) / STATE_FILE)
    return dict(state.get("hardware") or {})


def load_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Everything a resumed run needs from a checkpoint folder.

    A file of it that cannot be loaded raises CheckpointError naming the file: a resumed run
    stops there rather than train again from scratch over the epochs it has recorded (a
    silent restart would overwrite them); deleting the folder is the user's explicit choice.
    """
    folder = Path(folder)
    try:
        state = load_tensor_file(folder / STATE_FILE, device)
        return Checkpoint(state, read_best(folder), read_history(folder))
    except TensorFileError as exc:
        raise CheckpointError(
            f"cannot resume from the checkpoint {folder.name} (delete it to train again from an "
            f"older checkpoint or from the start): {exc}"
        ) from None
