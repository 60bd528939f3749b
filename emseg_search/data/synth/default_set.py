"""Where the embedded synthetic data set lives, and making it on first use."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from emseg_search.data.synth.generator import write_synthetic_dataset

DEFAULT_N = 200
DEFAULT_SEED = 0
DEFAULT_SIZE = 256


def default_synthetic_dir() -> Path:
    """``$EMSEG_SYNTH_DIR`` if set, else ``data/synthetic`` under the working directory."""
    return Path(os.environ.get("EMSEG_SYNTH_DIR", "data/synthetic")).absolute()


def ensure_synthetic_data(
    root: str | Path | None = None,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    size: int = DEFAULT_SIZE,
    progress: bool = False,
) -> Path:
    """Return the synthetic data folder, generating (n, seed, size) there if it has none yet.

    A folder that already holds a synthetic set (``synth.json``) is used as it is, whatever
    its parameters: nothing is ever overwritten. Generation is deterministic, so every node of
    a cluster can make its own identical copy; a lock file keeps processes on one node from
    writing it twice at once.
    """
    root = Path(root) if root is not None else default_synthetic_dir()
    if (root / "synth.json").is_file():
        return root
    if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise FileExistsError(
            f"{root} is not empty but holds no synthetic data set "
            "(no synth.json); point EMSEG_SYNTH_DIR at another folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "synth.json").is_file():
            write_synthetic_dataset(root, n=n, seed=seed, size=size, progress=progress)
    return root
