"""Atomic writes: every result and artifact file is written to a temporary name beside its
target, flushed to disk (fsync), then renamed over it, so a reader sees the old file or the new
one, never a torn one, and a crash leaves at most a stray temporary file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _file_mode() -> int:
    """The mode open() would give a new file: 0o666 less the umask (read once, on first use:
    setting the umask is the only portable way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_tree(folder: str | Path) -> None:
    """fsync every file below ``folder`` and the folders themselves (before a rename)."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is fsynced and renamed
    over ``path``, on an exception it is deleted and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600; results are shared files
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def replace_dir(filled: str | Path, target: str | Path) -> Path:
    """Put the complete folder ``filled`` (on the same filesystem) in place of ``target``.

    ``filled`` is fsynced first. A folder cannot be renamed over a non-empty one, so an old
    ``target`` is renamed aside to ``.<name>.old`` first and deleted after: a reader finds the
    old complete folder or the new complete one, never a mix. Only a crash between those two
    renames leaves no ``target``; the old one is then ``.<name>.old``, which the next call
    removes (the caller writes ``target`` again, e.g. the search's best/ on --resume).
    """
    filled, target = Path(filled), Path(target)
    fsync_tree(filled)
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        os.replace(target, aside)
    os.replace(filled, target)
    fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A new empty folder beside ``target`` to fill; on success it takes the place of
    ``target`` (``replace_dir``), on an exception it is deleted and ``target`` is left as it
    was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless something failed
