"""Decode and validate a whole data set once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emseg_search.data.errors import DataError, FileProblem, Problem
from emseg_search.data.layout import DataIndex, scan_folder_problems
from emseg_search.data.readers import read_image, read_mask


@dataclass(frozen=True)
class Micrograph:
    """A decoded micrograph: grey image (H, W) and instance labels (H, W), 0 = background."""

    name: str
    image: np.ndarray
    instances: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Binary particle mask (H, W) bool."""
        return self.instances > 0


@dataclass(frozen=True)
class EMData:
    """A validated, decoded data set: its index and every micrograph, sorted by name."""

    index: DataIndex
    items: tuple[Micrograph, ...]

    @property
    def root(self) -> Path:
        """The data folder."""
        return self.index.root

    @property
    def names(self) -> tuple[str, ...]:
        """Names of all micrographs, sorted."""
        return tuple(m.name for m in self.items)

    def subset(self, names: Sequence[str]) -> tuple[Micrograph, ...]:
        """The micrographs with these names, in the given order (KeyError names what is absent)."""
        by_name = {m.name: m for m in self.items}
        absent = [n for n in names if n not in by_name]
        if absent:
            raise KeyError(f"not in {self.root}: {', '.join(absent[:10])}")
        return tuple(by_name[n] for n in names)


def _decode_pair(name: str, image_path: Path, mask_path: Path) -> Micrograph | list[Problem]:
    """Decode one pair, or return what is wrong with it."""
    problems: list[Problem] = []
    image = instances = None
    try:
        image = read_image(image_path)
    except FileProblem as exc:
        problems.append(exc.problem)
    try:
        instances, _ = read_mask(mask_path)
    except FileProblem as exc:
        problems.append(exc.problem)
    if image is not None and instances is not None and image.shape != instances.shape:
        problems.append(
            Problem(
                mask_path,
                f"mask is {instances.shape[1]}x{instances.shape[0]} "
                f"(WxH) but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        )
    return problems or Micrograph(name, image, instances)


_CACHE: dict[tuple, EMData] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(index: DataIndex) -> tuple:
    """Identify a data set by its files' paths, sizes and modification times."""
    stats = []
    for p in index.pairs:
        for f in (p.image, p.mask):
            st = os.stat(f)
            stats.append((str(f), st.st_size, st.st_mtime_ns))
    return (str(index.root.resolve()), tuple(stats))


def load_data(root: str | Path, progress: bool = False) -> EMData:
    """Scan, decode and validate every pair under ``root``; raise DataError listing all problems.

    Decoded data sets are cached per process (keyed by file sizes and mtimes), so training
    epochs, evaluation and Ray workers on one node each decode a file only once.
    """
    index, problems = scan_folder_problems(root)
    key = _cache_key(index)
    with _CACHE_LOCK:
        if not problems and key in _CACHE:
            return _CACHE[key]
    pairs = index.pairs
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc=f"reading {index.root.name}", unit="img", leave=False)
    items: list[Micrograph] = []
    for p in pairs:
        result = _decode_pair(p.name, p.image, p.mask)
        if isinstance(result, Micrograph):
            items.append(result)
        else:
            problems.extend(result)
    if problems:
        raise DataError(index.root, sorted(problems, key=lambda p: str(p.path)))
    if not items:
        raise DataError(index.root, [Problem(index.root, "contains no image/mask pairs")])
    data = EMData(index=index, items=tuple(items))
    with _CACHE_LOCK:
        _CACHE.clear()  # keep one data set: EMPS decoded is ~150 MB
        _CACHE[key] = data
    return data


def clear_cache() -> None:
    """Forget decoded data sets (tests, long-lived processes switching data)."""
    with _CACHE_LOCK:
        _CACHE.clear()
