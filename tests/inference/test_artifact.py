"""The model artifact folder: written whole or not at all, and loaded back as it was written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_tiny_artifact

from emseg_search.config import TrialConfig
from emseg_search.inference.artifact import FILES, load_artifact, write_artifact


def test_rewrite_swaps_the_folder_whole(tmp_path: Path) -> None:
    out = write_tiny_artifact(tmp_path / "model", seed=0)
    (out / "stale.txt").write_text("from an older writer")
    write_tiny_artifact(out, seed=1, metrics={"val_iou": 0.75, "best_epoch": 2})
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or old folder
    assert load_artifact(out).meta["metrics"] == {"val_iou": 0.75, "best_epoch": 2}


def test_failed_write_keeps_the_old_artifact_and_leaves_no_temp(tmp_path: Path) -> None:
    out = write_tiny_artifact(tmp_path / "model", seed=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    old = load_artifact(out)
    broken = {"encoder.conv1.weight": "not a tensor"}  # fails after the first files are written
    with pytest.raises(AttributeError):
        write_artifact(
            out,
            TrialConfig(),
            broken,  # type: ignore[arg-type]
            mean=0.5,
            std=0.25,
            normalization_source="test",
            fingerprint=old.fingerprint,
            stride=32,
            metrics={"val_iou": 0.9},
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    again = load_artifact(out)
    for key, value in old.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_an_artifact_with_pickled_code_in_its_weights_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model folder from elsewhere is untrusted: weights.pt that would run code on loading
    is refused with one line naming it, by the API and by the CLI, and the code never runs."""
    from helpers import write_poisoned

    from emseg_search.cli.main import main
    from emseg_search.inference.artifact import ArtifactError

    out = write_tiny_artifact(tmp_path / "model", seed=0)
    marker = tmp_path / "ran"
    write_poisoned(out / "weights.pt", marker)
    with pytest.raises(ArtifactError, match=r"weights\.pt: refused"):
        load_artifact(out)
    image = tmp_path / "in.png"
    import imageio.v3 as iio
    import numpy as np

    iio.imwrite(image, np.zeros((32, 32), np.uint8))
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights.pt: refused" in err[0] and "Traceback" not in err[0]
    assert not marker.exists()
