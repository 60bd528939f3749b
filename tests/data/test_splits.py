"""Train/validation splits: reproducible from a seed, or taken from split files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_folder

from emseg_search.data import DataError, resolve_split, scan_folder, split_names


def test_seeded_split_is_reproducible_and_order_independent() -> None:
    names = [f"n{i:03d}" for i in range(50)]
    a = split_names(names, 0.2, seed=3)
    assert a == split_names(list(reversed(names)), 0.2, seed=3)
    assert a != split_names(names, 0.2, seed=4)
    train, val = a
    assert len(val) == 10 and not set(train) & set(val) and set(train) | set(val) == set(names)


def test_bad_fraction_and_tiny_sets() -> None:
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_names(["a", "b"], 1.0, 0)
    with pytest.raises(ValueError, match="at least 2 images"):
        split_names(["a"], 0.5, 0)


def test_test_csv_is_held_out_and_val_file_used(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=6)
    (root / "test.csv").write_text("img05\n")
    split = resolve_split(scan_folder(root), val_fraction=0.2, seed=0)
    assert "img05" not in split.train + split.val
    (tmp_path / "val.txt").write_text("img01\nimg02\n")
    split = resolve_split(scan_folder(root), val_file=tmp_path / "val.txt")
    assert split.val == ("img01", "img02")
    assert split.train == ("img00", "img03", "img04")


def test_val_fraction_zero_trains_on_everything_but_test_csv(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=5)
    (root / "test.csv").write_text("img02\n")
    split = resolve_split(scan_folder(root), val_fraction=0.0)
    assert split.val == () and split.train == ("img00", "img01", "img03", "img04")
    # a split that is given still wins: val_fraction only governs the seeded split
    (tmp_path / "val.txt").write_text("img01\n")
    split = resolve_split(scan_folder(root), val_fraction=0.0, val_file=tmp_path / "val.txt")
    assert split.val == ("img01",) and "img01" not in split.train


def test_val_csv_in_the_data_folder_is_the_default(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=5)
    (root / "val.csv").write_text("img04\n")
    split = resolve_split(scan_folder(root))
    assert split.val == ("img04",) and "val.csv" in split.source


def test_val_file_errors_name_the_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=4)
    (root / "test.csv").write_text("img03\n")
    bad = tmp_path / "myval.csv"
    bad.write_text("img03\nghost\n")
    with pytest.raises(DataError) as info:
        resolve_split(scan_folder(root), val_file=bad)
    text = str(info.value)
    assert "myval.csv: names 1 image(s) not in the data set: ghost" in text
    assert "myval.csv: names 1 image(s) of test.csv: img03" in text
