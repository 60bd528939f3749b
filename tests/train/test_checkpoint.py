"""The checkpoint format: what it stores loads with weights_only=True; incomplete folders are
never taken for checkpoints."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emseg_search.train.checkpoint import (
    BEST_FILE,
    HISTORY_FILE,
    STATE_FILE,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    to_plain,
)


class Mode(enum.IntEnum):
    FAST = 1


def test_numpy_paths_and_enums_are_stored_as_plain_values(tmp_path: Path) -> None:
    """torch refuses all of these under weights_only=True unless they are converted."""
    model = nn.BatchNorm2d(2)
    state = {
        "model": model.state_dict(),
        "val": {"iou": np.float64(0.25), "epoch": np.int64(3)},
        "config": {"data": Path("/data/emps"), "mode": Mode.FAST, "sizes": (64, 128)},
        "mask": np.array([1, 0, 1], dtype=np.uint8),
    }
    save_checkpoint(tmp_path, state, {"w": torch.ones(2)}, [{"epoch": np.int64(0)}])
    loaded = load_checkpoint(tmp_path)
    assert loaded.state["val"] == {"iou": 0.25, "epoch": 3}
    assert type(loaded.state["val"]["iou"]) is float and type(loaded.state["val"]["epoch"]) is int
    assert loaded.state["config"] == {"data": "/data/emps", "mode": 1, "sizes": (64, 128)}
    assert type(loaded.state["config"]["mode"]) is int
    assert torch.equal(loaded.state["mask"], torch.tensor([1, 0, 1], dtype=torch.uint8))
    assert loaded.history == [{"epoch": 0}] and torch.equal(loaded.best["w"], torch.ones(2))
    # a module's state_dict keeps its layer versions, which load_state_dict reads
    assert isinstance(loaded.state["model"], OrderedDict)
    assert loaded.state["model"]._metadata == model.state_dict()._metadata
    nn.BatchNorm2d(2).load_state_dict(loaded.state["model"])


def test_an_unstorable_value_is_named() -> None:
    with pytest.raises(TypeError, match=r"checkpoint state\['val'\]\['hook'\]: cannot store"):
        to_plain({"val": {"hook": object()}})


def test_the_history_is_written_last_and_marks_a_complete_checkpoint(tmp_path: Path) -> None:
    for epoch in (0, 1, 2):
        folder = tmp_path / checkpoint_name(epoch)
        folder.mkdir()
        save_checkpoint(folder, {"epoch": epoch}, {}, [{"epoch": epoch}])
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(2)
    # an interrupted save of epoch 3: state and weights, no history yet
    partial = tmp_path / checkpoint_name(3)
    partial.mkdir()
    torch.save({"epoch": 3}, partial / STATE_FILE)
    torch.save({}, partial / BEST_FILE)
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(2)
    (partial / HISTORY_FILE).write_text(json.dumps([{"epoch": 3}]))
    assert latest_checkpoint(tmp_path) == partial
    assert latest_checkpoint(tmp_path / "missing") is None
    assert checkpoint_name(12) == "checkpoint_epoch_000012" < checkpoint_name(100)


def test_a_checkpoint_with_pickled_code_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Checkpoints may come from a shared bucket: resuming from a poisoned one fails with the
    file's name, and its code never runs."""
    from helpers import write_poisoned

    from emseg_search.models.state_dict import TensorFileError
    from emseg_search.train.checkpoint import (
        BEST_FILE,
        STATE_FILE,
        load_checkpoint,
        save_checkpoint,
    )

    marker = tmp_path / "ran"
    for poisoned in (STATE_FILE, BEST_FILE):
        folder = tmp_path / poisoned
        folder.mkdir()
        save_checkpoint(folder, {"epoch": 1}, {"w": torch.zeros(1)}, [{"epoch": 1}])
        write_poisoned(folder / poisoned, marker)
        with pytest.raises(TensorFileError, match=rf"{poisoned}: refused"):
            load_checkpoint(folder)
    assert not marker.exists()


@pytest.mark.parametrize("damaged", ["state.pt", "best_model.pt", "history.json"])
def test_a_truncated_checkpoint_file_is_an_error_naming_it(tmp_path: Path, damaged: str) -> None:
    """A checkpoint cut short on disk (a node lost mid-upload, a full disk) stops a resumed run
    with the file's name, never a JSON or zip traceback (tests/faults: checkpoint truncated)."""
    from emseg_search.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, {"epoch": 1}, {"w": torch.zeros(1)}, [{"epoch": 1}])
    file = tmp_path / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        load_checkpoint(tmp_path)
    assert str(file) in str(info.value) and "delete it" in str(info.value)
