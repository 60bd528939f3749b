"""Folder scanning and whole-data-set validation: every problem named, all of them at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_folder
from PIL import Image

from emseg_search.cli import inspect_data as inspect
from emseg_search.data import DataError, clear_cache, load_data, scan_folder


def test_emps_layout_reads_instances(emps_folder: Path) -> None:
    data = load_data(emps_folder)
    assert data.index.layout == "emps"
    assert data.names == ("img00", "img01", "img02", "img03")
    m = data.items[0]
    assert m.image.dtype == np.uint8 and m.instances.dtype == np.uint16
    assert sorted(np.unique(m.instances)) == [0, 1, 2]


def test_images_masks_layout_with_mask_suffix(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", layout="masks")
    for p in (root / "masks").iterdir():
        p.rename(p.with_name(p.stem + "_mask.png"))
    data = load_data(root)
    assert data.index.layout == "images-masks"
    assert len(data.items) == 4
    assert data.items[0].instances.max() == 2  # two disks -> two connected components


def test_split_files_are_read(emps_folder: Path) -> None:
    (emps_folder / "train.csv").write_text("img00\nimg01.png\n\nimg02\n")
    (emps_folder / "test.csv").write_text("img03\n")
    idx = scan_folder(emps_folder)
    assert idx.splits == {"train": ("img00", "img01", "img02"), "test": ("img03",)}


def _problems(root: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        load_data(root)
    return [str(p) for p in info.value.problems]


def test_missing_pairs_are_all_listed(emps_folder: Path) -> None:
    (emps_folder / "segmaps" / "img01.png").unlink()
    (emps_folder / "images" / "img02.png").unlink()
    problems = _problems(emps_folder)
    assert any("images/img01.png: image has no mask" in p for p in problems)
    assert any("segmaps/img02.png: mask has no image" in p for p in problems)


def test_size_mismatch_names_the_mask(emps_folder: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(emps_folder / "segmaps" / "img00.png")
    (p,) = _problems(emps_folder)
    assert "segmaps/img00.png: mask is 10x10 (WxH) but its image img00.png is 64x48" in p


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    (p,) = _problems(tmp_path / "e")
    assert "images: contains no images" in p


def test_not_a_data_folder(tmp_path: Path) -> None:
    assert "missing images/ and segmaps|masks/" in _problems(tmp_path)[0]
    assert "is not a folder" in _problems(tmp_path / "nope")[0]


def test_split_file_naming_absent_images(emps_folder: Path) -> None:
    (emps_folder / "train.csv").write_text("img00\nghost1\nghost2\n")
    (p,) = _problems(emps_folder)
    assert "train.csv: names 2 image(s) not in images/: ghost1, ghost2" in p


def test_duplicate_names(emps_folder: Path) -> None:
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(emps_folder / "images" / "img00.tif")
    assert any("several files share the name 'img00'" in p for p in _problems(emps_folder))


def _break_three(root: Path) -> None:
    """The issue's scenario: a deleted mask, a truncated PNG and a resized mask."""
    (root / "segmaps" / "img00.png").unlink()
    big = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    Image.fromarray(big).save(root / "images" / "img01.png")
    data = (root / "images" / "img01.png").read_bytes()
    (root / "images" / "img01.png").write_bytes(data[: len(data) // 3])
    m = Image.open(root / "segmaps" / "img02.png")
    m.resize((m.width // 2, m.height // 2), Image.NEAREST).save(root / "segmaps" / "img02.png")


def test_inspect_cli_names_all_three_broken_files(
    emps_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _break_three(emps_folder)
    assert inspect.main([str(emps_folder), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    for name in ("images/img00.png", "images/img01.png", "segmaps/img02.png"):
        assert name in err
    assert "Traceback" not in err
    assert inspect.main([str(emps_folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["valid"] and len(report["errors"]) == 3


def test_inspect_cli_table_and_json(
    emps_folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert inspect.main([str(emps_folder), "--quiet", "--out", str(tmp_path / "fp.json")]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "4  (uint8)" in out
    assert json.loads((tmp_path / "fp.json").read_text())["n_images"] == 4
    assert inspect.main([str(emps_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["fingerprint"]["n_particles"] == 8


def test_decoded_once_then_cached_until_files_change(emps_folder: Path) -> None:
    clear_cache()
    first = load_data(emps_folder)
    assert load_data(emps_folder) is first
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(emps_folder / "images" / "img00.png")
    again = load_data(emps_folder)
    assert again is not first and again.items[0].image.max() == 0
