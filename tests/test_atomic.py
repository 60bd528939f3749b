"""atomic: a failed write leaves the old file and no temporary; folders swap whole; readers of a
Parquet table that is being rewritten never see a torn file."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emseg_search.atomic import atomic_dir, atomic_path, replace_dir, write_bytes, write_text
from emseg_search.results.io import read_rows, read_table, write_table

SCHEMA = pa.schema([("n", pa.int64()), ("marker", pa.int64())])


def names(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones included, sorted."""
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes_replace_the_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "sub" / "a.json", "old")
    assert write_bytes(path, b"new") == path
    assert path.read_bytes() == b"new" and names(path.parent) == ["a.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert names(tmp_path) == ["a.json"]


def test_failed_table_write_keeps_the_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_table([{"n": 1, "marker": 1}], SCHEMA, tmp_path / "t.parquet")

    def dies_halfway(table: pa.Table, where: str | Path, **_: object) -> None:
        Path(where).write_bytes(b"PAR1 half a table")
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        write_table([{"n": 2, "marker": 2}], SCHEMA, path)
    monkeypatch.undo()
    assert read_rows(path) == [{"n": 1, "marker": 1}]
    assert names(tmp_path) == ["t.parquet"]


def test_replace_dir_swaps_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.pt").write_text("old")
    (target / "stale.json").write_text("old")
    filled = tmp_path / ".model-new"
    (filled / "sub").mkdir(parents=True)
    (filled / "weights.pt").write_text("new")
    (filled / "sub" / "x").write_text("new")
    assert replace_dir(filled, target) == target
    assert names(target) == ["sub", "weights.pt"]  # nothing of the old folder is left
    assert (target / "weights.pt").read_text() == "new"
    assert names(tmp_path) == ["model"]  # neither the filled folder nor the old one remain


def test_replace_dir_into_nothing_and_after_a_crash(tmp_path: Path) -> None:
    filled = tmp_path / ".new"
    filled.mkdir()
    (filled / "f").write_text("new")
    # a crash between the two renames of an earlier call left the old folder aside
    (tmp_path / ".model.old").mkdir()
    replace_dir(filled, tmp_path / "model")
    assert names(tmp_path) == ["model"] and (tmp_path / "model" / "f").read_text() == "new"


def table_of(marker: int) -> list[dict[str, int]]:
    """Rows whose count depends on ``marker``, so a mix of two versions is detectable."""
    return [{"n": i, "marker": marker} for i in range(5_000 * marker)]


def test_atomic_dir_swaps_in_a_filled_folder_or_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "w").write_text("1", encoding="utf-8")
        assert not target.exists()  # nothing is visible until the folder is complete
    assert (target / "w").read_text(encoding="utf-8") == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "w").write_text("2", encoding="utf-8")
        raise RuntimeError("save failed")
    assert (target / "w").read_text(encoding="utf-8") == "1"
    assert names(tmp_path) == ["model"]  # no temporary folder left


def test_a_reader_never_sees_a_torn_table_while_a_writer_rewrites_it(tmp_path: Path) -> None:
    path = write_table(table_of(1), SCHEMA, tmp_path / "trials.parquet")
    done, failures, reads = threading.Event(), [], [0]

    def reader() -> None:
        while not done.is_set():
            try:
                table = read_table(path)
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            markers = set(table.column("marker").to_pylist())
            if len(markers) != 1 or table.num_rows != 5_000 * markers.pop():
                failures.append(f"mixed table: {table.num_rows} rows")
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            write_table(table_of(1 + i % 3), SCHEMA, path)
    finally:
        done.set()
        thread.join()
    assert not failures, failures[:3]
    assert reads[0] > 0
    assert names(tmp_path) == ["trials.parquet"]
