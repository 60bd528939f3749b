"""`split`: a reproducible (grouped) split file, and one clear error for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_folder

from emseg_search.cli.split import main
from emseg_search.data import resolve_split, scan_folder


def test_split_writes_whole_groups_and_excludes_a_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_folder(tmp_path / "d", n=20, size=(32, 32))
    (root / "metadata.csv").write_text(
        "filename,doi\n" + "".join(f"img{i:02d}.png,p{i // 4}\n" for i in range(20))
    )
    test = tmp_path / "test.csv"
    assert main([str(root), "--group-by", "metadata.csv:doi", "--out", str(test)]) == 0
    named = test.read_text().split()
    assert len(named) == 4 and len({int(n[3:]) // 4 for n in named}) == 1  # one whole paper
    assert "4 of 20 images from 1 of 5 groups" in capsys.readouterr().out
    val = tmp_path / "val.csv"
    argv = [str(root), "--group-by", "metadata.csv:doi", "--exclude", str(test), "--out", str(val)]
    assert main([*argv, "--fraction", "0.25", "--seed", "1"]) == 0
    assert not set(val.read_text().split()) & set(named)
    # the files work as the search's test file and validation file
    split = resolve_split(
        scan_folder(root), val_file=val, test_file=test, group_by="metadata.csv:doi"
    )
    assert len(split.train) == 12
    assert main([*argv]) == 2  # exists
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_split_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder(tmp_path / "d", n=4, size=(32, 32))
    out = tmp_path / "s.csv"
    assert main([str(root), "--group-by", "meta.csv:doi", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "meta.csv: group_by 'meta.csv:doi': no such file" in err and "Traceback" not in err
    assert main([str(root), "--fraction", "1.5", "--out", str(out)]) == 2
    assert "--fraction must be in (0, 1)" in capsys.readouterr().err
    assert not out.exists()
