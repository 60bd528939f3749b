"""`predict`: masks, 16-bit instances, overlays, particles.parquet, failures listed, big images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_folder, write_tiny_artifact
from PIL import Image

from emseg_search.cli.predict import main
from emseg_search.inference.prediction import find_inputs
from emseg_search.results.schemas import PARTICLE_COLUMNS


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("m") / "model", threshold=0.52)


def test_outputs_for_every_image_and_failures_listed(model: Path, tmp_path: Path, capsys) -> None:
    folder = make_folder(tmp_path / "in", n=3, size=(48, 64))
    big = tmp_path / "big.tif"  # 16-bit, larger than a tile: sliding window
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 4000, (300, 260)).astype(np.uint16)).save(big)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main([str(model), str(folder), str(big), str(broken), "--out", str(out),
                 "--tile-size", "64", "--pixel-size", "2.5", "--quiet"])  # fmt: skip
    assert code == 1  # one input failed; the others were processed
    assert "broken.png" in capsys.readouterr().err
    names = ["img00", "img01", "img02", "big"]
    for name in names:
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        inst = np.asarray(Image.open(out / "instances" / f"{name}.png"))
        ov = np.asarray(Image.open(out / "overlays" / f"{name}.png"))
        shape = (300, 260) if name == "big" else (48, 64)
        assert mask.shape == inst.shape == ov.shape[:2] == shape
        assert set(np.unique(mask)) <= {0, 255} and inst.dtype == np.uint16
        assert not (inst > 0)[mask == 0].any()  # particles lie inside the mask
    particles = pd.read_parquet(out / "particles.parquet")
    assert list(particles.columns) == list(PARTICLE_COLUMNS)
    for name in names:
        inst = np.asarray(Image.open(out / "instances" / f"{name}.png"))
        assert (particles["image"] == name).sum() == len(np.unique(inst)) - 1
    assert np.allclose(
        particles["equivalent_diameter_nm"], particles["equivalent_diameter_px"] * 2.5
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["particles"] == len(particles)
    assert [f["file"] for f in summary["failures"]] == [str(broken)]
    assert summary["working_scale"] == {n: 1.0 for n in names}  # the model's own scale
    assert (out / "sizes.png").stat().st_size > 0


def test_scale_options_reach_the_summary(model: Path, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "in", n=2, size=(48, 64))
    out = tmp_path / "out"
    argv = [str(model), str(folder), "--out", str(out), "--quiet"]
    assert main([*argv, "--scale", "2", "--scale-tta", "1,1.5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["working_scale"] == {"img00": 2.0, "img01": 2.0}
    assert summary["options"]["scale"] == "2" and summary["options"]["scale_tta"] == [1.0, 1.5]


def test_inputs_are_checked_before_the_model_loads(model: Path, tmp_path: Path, capsys) -> None:
    assert main([str(model), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / d / "x.png")
    _, problems = find_inputs([tmp_path / "a", tmp_path / "b"])
    assert problems and "same name" in problems[0]
    assert main([str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "o")]) == 2
    assert "not a model artifact" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
