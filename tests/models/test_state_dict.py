"""load_tensor_file: the one way .pt/.pth files are read; pickled code is refused, not run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_poisoned

from emseg_search.models.state_dict import TensorFileError, load_tensor_file


def test_plain_tensors_and_containers_load(tmp_path: Path) -> None:
    state = {"w": torch.arange(3.0), "meta": {"epoch": 2, "ok": [1.5, "x"]}}
    torch.save(state, tmp_path / "s.pt")
    loaded = load_tensor_file(tmp_path / "s.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == state["meta"]


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_poisoned(tmp_path / "weights.pt", marker)
    with pytest.raises(TensorFileError, match=r"weights\.pt: refused: it holds pickled Python"):
        load_tensor_file(path)
    assert not marker.exists()  # the payload did not run


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_file_names_itself(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(100)}, path)
    whole = path.read_bytes()
    path.write_bytes(
        {"truncated": whole[: len(whole) // 2], "empty": b"", "text": b"hello"}[damage]
    )
    with pytest.raises(TensorFileError, match=r"state\.pt: not a readable torch file"):
        load_tensor_file(path)
