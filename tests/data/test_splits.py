"""Train/validation splits: reproducible from a seed, or taken from split files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_folder

from emseg_search.data import DataError, read_groups, resolve_split, scan_folder, split_names


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


def _grouped_folder(tmp_path: Path, n: int = 12, per_group: int = 3) -> Path:
    """A data set whose metadata.csv puts each run of ``per_group`` images in one paper."""
    root = make_folder(tmp_path / "d", n=n, size=(32, 32))
    rows = "".join(f"img{i:02d}.png,paper{i // per_group}\n" for i in range(n))
    (root / "metadata.csv").write_text("filename,doi\n" + rows)
    return root


@pytest.mark.parametrize("seed", range(8))
def test_grouped_split_never_puts_a_group_on_both_sides(tmp_path: Path, seed: int) -> None:
    root = _grouped_folder(tmp_path, n=30, per_group=3)
    split = resolve_split(scan_folder(root), 0.3, seed, group_by="metadata.csv:doi")
    paper = {f"img{i:02d}": f"paper{i // 3}" for i in range(30)}
    assert {paper[n] for n in split.train}.isdisjoint({paper[n] for n in split.val})
    assert sorted(split.train + split.val) == sorted(paper) and split.val
    assert "grouped by metadata.csv:doi" in split.source
    again = resolve_split(scan_folder(root), 0.3, seed, group_by="metadata.csv:doi")
    assert again == split  # reproducible


def test_ungrouped_split_can_split_groups_which_is_why_grouping_exists(tmp_path: Path) -> None:
    root = _grouped_folder(tmp_path, n=30, per_group=3)
    paper = {f"img{i:02d}": f"paper{i // 3}" for i in range(30)}
    leaks = [
        bool({paper[n] for n in s.train} & {paper[n] for n in s.val})
        for s in (resolve_split(scan_folder(root), 0.3, seed) for seed in range(4))
    ]
    assert any(leaks)


def test_regex_groups_for_generic_layouts(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=8, size=(32, 32))
    groups = read_groups(root, [f"img{i:02d}" for i in range(8)], r"regex:img0(\d)")
    assert groups["img05"] == "5"  # the first group of the pattern
    halves = read_groups(root, ["img01", "img06"], "regex:img0[0-3]|img0[4-7]")
    assert halves == {"img01": "img01", "img06": "img06"}  # no group in the pattern: the match
    split = resolve_split(scan_folder(root), 0.25, 0, group_by=r"regex:img0(\d)")
    assert len(split.val) == 2
    with pytest.raises(DataError, match="at least 2 groups"):
        resolve_split(scan_folder(root), 0.25, 0, group_by="regex:img")
    with pytest.raises(DataError, match=r"regex:zzz matches no part of 8 image"):
        resolve_split(scan_folder(root), 0.25, 0, group_by="regex:zzz")
    with pytest.raises(DataError, match="not a regular expression"):
        resolve_split(scan_folder(root), 0.25, 0, group_by="regex:(")


def test_group_by_errors_name_the_file_and_column(tmp_path: Path) -> None:
    root = _grouped_folder(tmp_path, n=6)
    index = scan_folder(root)
    with pytest.raises(DataError, match=r"nometa.csv: group_by 'nometa.csv:doi': no such file"):
        resolve_split(index, group_by="nometa.csv:doi")
    with pytest.raises(DataError, match=r"metadata.csv: has no column 'paper'; columns: filename"):
        resolve_split(index, group_by="metadata.csv:paper")
    with pytest.raises(DataError, match="expected CSV:COLUMN or regex:PATTERN"):
        resolve_split(index, group_by="doi")
    (root / "metadata.csv").write_text("filename,doi\nimg00.png,p0\nimg01.png,\n")
    with pytest.raises(DataError, match=r"gives no 'doi' for 5 image\(s\): img01, img02"):
        resolve_split(index, group_by="metadata.csv:doi")


def test_given_splits_that_cross_groups_are_refused(tmp_path: Path) -> None:
    root = _grouped_folder(tmp_path, n=12, per_group=3)
    index = scan_folder(root)
    val = tmp_path / "val.txt"
    val.write_text("img00\nimg01\n")  # paper0 also has img02, left in training
    with pytest.raises(DataError, match=r"val.txt: puts 1 group\(s\) .* on both sides.*paper0"):
        resolve_split(index, val_file=val, group_by="metadata.csv:doi")
    val.write_text("img00\nimg01\nimg02\n")
    assert resolve_split(index, val_file=val, group_by="metadata.csv:doi").val == (
        "img00",
        "img01",
        "img02",
    )
    test = tmp_path / "test.txt"
    test.write_text("img03\n")
    with pytest.raises(DataError, match=r"test.txt: test images share 1 group"):
        resolve_split(index, test_file=test, group_by="metadata.csv:doi")


def test_test_file_is_held_out_of_train_and_val(tmp_path: Path) -> None:
    root = _grouped_folder(tmp_path, n=12, per_group=3)
    test = tmp_path / "test.txt"
    test.write_text("img09\nimg10\nimg11\n")
    split = resolve_split(scan_folder(root), 0.34, 0, group_by="metadata.csv:doi", test_file=test)
    assert not {"img09", "img10", "img11"} & set(split.train + split.val)
    assert len(split.train + split.val) == 9 and "held out" in split.source
    val = tmp_path / "val.txt"
    val.write_text("img09\n")
    with pytest.raises(DataError, match=r"val.txt: names 1 image\(s\) of .*test.txt: img09"):
        resolve_split(scan_folder(root), val_file=val, test_file=test)
