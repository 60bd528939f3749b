"""Deterministic train/validation splits: from split files or from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emseg_search.atomic import write_text
from emseg_search.data.errors import DataError, Problem
from emseg_search.data.layout import DataIndex, read_split_file


@dataclass(frozen=True)
class Split:
    """Names used for training and for validation; ``source`` says where the split came from."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    source: str


def split_names(
    names: list[str] | tuple[str, ...], val_fraction: float, seed: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split names into (train, val) reproducibly: same names and seed -> same split.

    The names are sorted first, so the order a filesystem lists them in does not matter.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(names)
    if len(ordered) < 2:
        raise ValueError(
            f"need at least 2 images to split into train and validation, got {len(ordered)}"
        )
    from sklearn.model_selection import train_test_split  # heavy import, only when splitting

    train, val = train_test_split(ordered, test_size=val_fraction, random_state=seed, shuffle=True)
    return tuple(sorted(train)), tuple(sorted(val))


def resolve_split(
    index: DataIndex,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_file: str | Path | None = None,
) -> Split:
    """Choose the train/validation split of a data set.

    Images named in ``test.csv`` are held out of both. The validation names come from, in
    order: ``val_file``, the data set's ``val.csv``, or a seeded split of the remaining
    (``train.csv`` if present, else all) names; ``val_fraction`` 0 means no validation
    images: everything but the test images trains (a final model).
    """
    test = set(index.splits.get("test", ()))
    pool = [n for n in index.splits.get("train", index.names) if n not in test]
    if val_file is None and "val" in index.splits:
        val_file = index.root / "val.csv"
    if val_file is not None:
        path = Path(val_file)
        if not path.is_file():
            raise DataError(index.root, [Problem(path, "validation split file does not exist")])
        val = read_split_file(path)
        known = set(index.names)
        absent = [n for n in val if n not in known]
        leaked = [n for n in val if n in test]
        problems = []
        if absent:
            problems.append(
                Problem(
                    path,
                    f"names {len(absent)} image(s) not in the data set: {', '.join(absent[:10])}",
                )
            )
        if leaked:
            problems.append(
                Problem(path, f"names {len(leaked)} image(s) of test.csv: {', '.join(leaked[:10])}")
            )
        if not val:
            problems.append(Problem(path, "names no images"))
        if problems:
            raise DataError(index.root, problems)
        val_set = set(val)
        train = tuple(n for n in sorted(pool) if n not in val_set)
        return Split(train=train, val=tuple(sorted(val_set)), source=str(path))
    if val_fraction == 0.0:
        return Split(train=tuple(sorted(pool)), val=(), source="none (val_fraction 0)")
    train, val = split_names(pool, val_fraction, seed)
    return Split(train=train, val=val, source=f"seed={seed}, val_fraction={val_fraction}")


def write_split_file(path: str | Path, names: list[str] | tuple[str, ...]) -> Path:
    """Write names one per line (the EMPS split-file format), atomically."""
    return write_text(path, "".join(f"{n}\n" for n in names))
