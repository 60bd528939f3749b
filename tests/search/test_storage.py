"""Storage: checkpoints saved, found and fetched the same way locally and on an object store."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from emseg_search.search.storage import Storage, StorageError
from emseg_search.train.checkpoint import COMPLETE_FILE


def remote(tmp_path: Path) -> Storage:
    """An object store stand-in: paths on it are not local paths (a sub-tree filesystem)."""
    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    return Storage(fs, "prefix/exp", uri="mock://prefix")


def fill(folder: Path, epoch: int) -> Path:
    (folder / "state.pt").write_bytes(b"s" * 100)
    (folder / COMPLETE_FILE).write_text(f"[{epoch}]")
    return folder


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_save_keeps_the_newest_complete_checkpoint(kind: str, tmp_path: Path) -> None:
    storage = Storage.open(tmp_path / "exp") if kind == "local" else remote(tmp_path)
    run = "trials/t1"
    assert storage.latest_checkpoint(run) is None
    for epoch in range(3):
        staging = fill(storage.staging_dir(run), epoch)
        storage.save_checkpoint(run, f"checkpoint_epoch_{epoch:06d}", staging)
        assert not staging.exists()  # renamed into place, or uploaded and removed
    assert storage.checkpoints(run) == [storage.path(run, "checkpoint_epoch_000002")]
    got = storage.download(storage.latest_checkpoint(run), tmp_path / "got")
    assert (got / COMPLETE_FILE).read_text() == "[2]"
    assert (got / "state.pt").stat().st_size == 100
    if kind == "local":  # plain paths: Ray Tune and the recorder use them as they are
        assert Path(storage.latest_checkpoint(run)).is_dir()


def test_an_interrupted_upload_is_not_a_checkpoint(tmp_path: Path) -> None:
    storage = remote(tmp_path)
    storage.save_checkpoint("r", "checkpoint_epoch_000000", fill(storage.staging_dir("r"), 0))
    partial = storage.path("r", "checkpoint_epoch_000001")
    storage.fs.create_dir(partial)
    with storage.fs.open_output_stream(f"{partial}/state.pt") as out:
        out.write(b"half")
    assert storage.latest_checkpoint("r") == storage.path("r", "checkpoint_epoch_000000")


def test_bad_uri_fails_with_its_name() -> None:
    with pytest.raises(StorageError, match=r"--storage nosuch://x: cannot open it"):
        Storage.open("/tmp/exp", "nosuch://x")


def test_remote_paths_and_descriptions(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path / "exp", f"file://{tmp_path}/store")
    assert storage.root == f"{tmp_path}/store/exp"  # the experiment's name under the URI
    assert storage.describe("tune") == f"file://{tmp_path}/store/exp/tune"
    assert not storage.exists("tune")
    storage.check_writable()
    assert storage.exists()


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://bucket/p", "s3://bucket/p"),
        (
            "s3://bucket/p?endpoint_override=127.0.0.1:9000&scheme=http&access_key=AK&secret_key=S3cr"
            "&session_token=T0k",
            "s3://bucket/p?endpoint_override=127.0.0.1:9000&scheme=http",
        ),
        ("s3://AK:S3cr@bucket/p?region=eu-west-1", "s3://bucket/p?region=eu-west-1"),
        ("gs://bucket/p?credentials=abc&Password=x", "gs://bucket/p"),
    ],
)
def test_strip_credentials_keeps_the_place_and_drops_the_keys(uri: str, shown: str) -> None:
    from emseg_search.search.storage import strip_credentials

    assert strip_credentials(uri) == shown
    assert strip_credentials(shown) == shown


def test_storage_errors_never_show_credentials(tmp_path: Path) -> None:
    from emseg_search.search.storage import StorageError

    with pytest.raises(StorageError) as err:
        Storage.open(tmp_path / "exp", "nosuchscheme://bucket/p?secret_key=S3cr&access_key=AK")
    assert "S3cr" not in str(err.value) and "AK" not in str(err.value)
    assert "nosuchscheme://bucket/p" in str(err.value)
