"""Shared fixtures: offline environment, tiny hand-made data folders, marker skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `realdata` tests without EMSEG_EMPS_DIR and `gpu` tests without CUDA."""
    emps = os.environ.get("EMSEG_EMPS_DIR")
    no_data = pytest.mark.skip(reason="EMSEG_EMPS_DIR is not set to the EMPS training data")
    for item in items:
        if "realdata" in item.keywords and not (emps and Path(emps).is_dir()):
            item.add_marker(no_data)
        if "gpu" in item.keywords:
            import torch

            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU"))


@pytest.fixture
def emps_folder(tmp_path: Path) -> Path:
    """A valid 4-image EMPS-layout folder."""
    return make_folder(tmp_path / "emps")
