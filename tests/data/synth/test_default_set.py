"""The default synthetic data set is made on first use and never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from emseg_search.cli import synth
from emseg_search.data import load_data
from emseg_search.data.synth.default_set import default_synthetic_dir, ensure_synthetic_data


def test_generated_once_then_reused(tmp_path: Path) -> None:
    root = ensure_synthetic_data(tmp_path / "s", n=6, seed=1, size=64)
    assert len(load_data(root).items) == 6
    stamp = (root / "synth.json").stat().st_mtime_ns
    assert ensure_synthetic_data(tmp_path / "s", n=6, seed=1, size=64) == root
    assert (root / "synth.json").stat().st_mtime_ns == stamp


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine is not empty"):
        ensure_synthetic_data(tmp_path / "mine", n=2, size=64)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_env_var_sets_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMSEG_SYNTH_DIR", str(tmp_path / "elsewhere"))
    assert default_synthetic_dir() == tmp_path / "elsewhere"


def test_cli_if_missing_keeps_an_existing_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert synth.main(["--out", str(out), "--n", "3", "--size", "64"]) == 0
    stamp = (out / "synth.json").stat().st_mtime_ns
    assert synth.main(["--out", str(out), "--n", "5", "--if-missing"]) == 0
    assert "not regenerating" in capsys.readouterr().out
    assert (out / "synth.json").stat().st_mtime_ns == stamp
