"""Where a search keeps its checkpoints and Ray Tune's experiment state.

By default that is the experiment folder itself (``results/<name>/tune``, ``.../trials``), which
on a multi-node cluster must be a filesystem every node mounts (NFS). ``--storage URI``
(``s3://bucket/prefix``, ``gs://bucket/prefix``, any URI pyarrow opens, with options such as
``?endpoint_override=host:port&scheme=http`` for S3-compatible servers) moves them to cloud
storage that every node reaches; the Parquet tables, experiment.json and model artifacts stay
in the experiment folder on the node that runs the search.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

from emseg_search.atomic import replace_dir
from emseg_search.train.checkpoint import CHECKPOINT_PREFIX, COMPLETE_FILE


class StorageError(ValueError):
    """A storage URI that cannot be opened; the message names it and says why."""


# query options of pyarrow's URIs that carry credentials (access_key, secret_key,
# session_token, ...): never written to experiment.json, a table, a log or a message
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential|passwd", re.IGNORECASE)


def strip_credentials(uri: str) -> str:
    """``uri`` without the credentials it may carry (user:password@ and secret query
    options), as recorded and shown; a resume takes them from the environment or --storage."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    kept = urlencode([(k, v) for k, v in query if not _SECRET_OPTION.search(k)], safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, kept, parts.fragment))


def redact(text: str, uri: str) -> str:
    """``text`` (e.g. a library's error message quoting ``uri``) with the credentials of
    ``uri`` masked."""
    parts = urlsplit(uri)
    secrets = [v for k, v in parse_qsl(parts.query) if _SECRET_OPTION.search(k) and v]
    if "@" in parts.netloc:
        secrets += [v for v in parts.netloc.rsplit("@", 1)[0].split(":") if v]
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Storage:
    """A folder on a pyarrow filesystem: ``fs`` + ``root`` (a path on ``fs``)."""

    fs: pafs.FileSystem
    root: str
    uri: str | None = None  # what the user gave; None = the local experiment folder

    @classmethod
    def open(cls, exp_dir: str | Path, uri: str | None = None) -> Storage:
        """The experiment folder, or ``uri``/<experiment name> when a URI is given."""
        exp_dir = Path(exp_dir).absolute()
        if uri is None:
            return cls(pafs.LocalFileSystem(), str(exp_dir))
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:
            raise StorageError(
                f"--storage {strip_credentials(uri)}: cannot open it ({redact(str(exc), uri)})"
            ) from None
        return cls(fs, f"{path.rstrip('/')}/{exp_dir.name}", uri)

    @property
    def is_local(self) -> bool:
        """Whether this is the local experiment folder (plain paths work)."""
        return self.uri is None

    def path(self, *parts: str) -> str:
        """A path on ``fs`` below ``root``."""
        return "/".join([self.root.rstrip("/"), *parts])

    def describe(self, *parts: str) -> str:
        """A path for messages: the local path, or the URI scheme + path."""
        if self.is_local:
            return self.path(*parts)
        return f"{self.uri.split('://', 1)[0]}://{self.path(*parts)}"

    def exists(self, *parts: str) -> bool:
        """Whether ``root/parts`` exists (StorageError when the storage cannot be reached)."""
        try:
            info = self.fs.get_file_info(self.path(*parts))
        except (OSError, ValueError) as exc:
            why = redact(str(exc), self.uri or "")
            raise StorageError(f"{self.describe(*parts)}: cannot reach it ({why})") from None
        return info.type != pafs.FileType.NotFound

    def check_writable(self) -> None:
        """Write and delete a marker file, so a wrong URI or missing credentials fail before
        the search starts (StorageError naming the URI)."""
        marker = self.path(".emseg-write-test")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(marker) as out:
                out.write(b"ok\n")
            self.fs.delete_file(marker)
        except (OSError, ValueError) as exc:
            hint = (
                "; credentials given in a --storage URI are not recorded: pass --storage "
                "with them again, or set them in the environment"
                if self.uri == strip_credentials(self.uri)
                else ""
            )
            why = redact(str(exc), self.uri)
            raise StorageError(
                f"--storage {strip_credentials(self.uri)}: cannot write {marker} ({why}){hint}"
            ) from None

    def checkpoints(self, run: str) -> list[str]:
        """Complete checkpoint folders of a run (paths on ``fs``), oldest first.

        Names sort by time (Ray Train: ``checkpoint_<timestamp>``; inline trials:
        ``checkpoint_epoch_<n>``); an inline folder without ``COMPLETE_FILE`` is skipped.
        """
        selector = pafs.FileSelector(self.path(run), allow_not_found=True)
        found = sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX)
        )
        return [p for p in found if self._complete(p)]

    def _complete(self, folder: str) -> bool:
        info = self.fs.get_file_info(f"{folder}/{COMPLETE_FILE}")
        return info.type == pafs.FileType.File

    def latest_checkpoint(self, run: str) -> str | None:
        """The newest complete checkpoint folder of a run, or None."""
        found = self.checkpoints(run)
        return found[-1] if found else None

    def download(self, folder: str, local: str | Path) -> Path:
        """Copy a folder of ``fs`` into the local folder ``local`` (a plain path if local)."""
        local = Path(local)
        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(folder, str(local), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        return local

    def staging_dir(self, run: str) -> Path:
        """A new local folder to fill with a checkpoint for ``save_checkpoint``: inside the
        run folder when local (so saving is a rename), a temp folder otherwise."""
        if self.is_local:
            Path(self.path(run)).mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}", dir=self.path(run)))
        return Path(tempfile.mkdtemp(prefix=CHECKPOINT_PREFIX))

    def save_checkpoint(self, run: str, name: str, staging: Path) -> str:
        """Store a filled ``staging_dir`` as ``run/name`` and delete older checkpoints.

        Locally the folder is renamed into place (``atomic.replace_dir``); on object stores
        its files are uploaded one by one with ``COMPLETE_FILE`` last, so a reader never takes
        a partial upload for a checkpoint.
        """
        target = self.path(run, name)
        if self.is_local:
            replace_dir(staging, target)
        else:
            try:
                self.fs.create_dir(target, recursive=True)
                for f in sorted(staging.iterdir(), key=lambda f: f.name == COMPLETE_FILE):
                    with (
                        self.fs.open_output_stream(f"{target}/{f.name}") as out,
                        f.open("rb") as src,
                    ):
                        shutil.copyfileobj(src, out, length=8 * 1024**2)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        for old in self.checkpoints(run):
            if old != target:
                self.fs.delete_dir(old)
        return target
