"""Deterministic train/validation splits: from split files or from a seed, optionally grouped.

Grouped splits keep every group (EMPS: the paper an image comes from, ``metadata.csv:doi``) on
one side: images of one paper look alike, and a split that puts them on both sides flatters
every number measured on it.
"""

from __future__ import annotations

import csv
import re
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


GROUP_BY_HELP = (
    "group images so that a split never puts one group on both sides: CSV:COLUMN (a CSV in "
    "the data folder, or a path, with a filename/name column; EMPS: metadata.csv:doi) or "
    "regex:PATTERN (the pattern's first group, or its match, in each image name)"
)
NAME_COLUMNS = ("filename", "name", "image", "file")


def read_groups(root: Path, names: list[str] | tuple[str, ...], group_by: str) -> dict[str, str]:
    """Each image name's group under ``group_by`` (GROUP_BY_HELP); DataError names the file or
    pattern and the images it cannot place."""
    if group_by.startswith("regex:"):
        return _regex_groups(root, names, group_by.removeprefix("regex:"))
    path_text, sep, column = group_by.rpartition(":")
    if not sep or not path_text.lower().endswith(".csv") or not column:
        raise DataError(
            root,
            [Problem(root, f"group_by {group_by!r}: expected CSV:COLUMN or regex:PATTERN")],
        )
    path = Path(path_text).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DataError(root, [Problem(path, f"group_by {group_by!r}: no such file")])
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        key = next((c for c in NAME_COLUMNS if c in header), None)
        if column not in header or key is None:
            missing = [
                what
                for what, ok in (
                    (f"column {column!r}", column in header),
                    (f"a name column ({'/'.join(NAME_COLUMNS)})", key is not None),
                )
                if not ok
            ]
            raise DataError(
                root,
                [Problem(path, f"has no {' and no '.join(missing)}; columns: {', '.join(header)}")],
            )
        table = {Path(row[key].strip()).stem: (row[column] or "").strip() for row in reader}
    unplaced = [n for n in names if not table.get(n)]
    if unplaced:
        raise DataError(
            root,
            [
                Problem(
                    path,
                    f"gives no {column!r} for {len(unplaced)} image(s): "
                    + ", ".join(unplaced[:10])
                    + (f" and {len(unplaced) - 10} more" if len(unplaced) > 10 else ""),
                )
            ],
        )
    return {n: table[n] for n in names}


def _regex_groups(root: Path, names: list[str] | tuple[str, ...], pattern: str) -> dict[str, str]:
    """Groups from a regular expression searched in each name (first group, else the match)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DataError(
            root, [Problem(root, f"group_by regex:{pattern}: not a regular expression ({exc})")]
        ) from None
    groups, unmatched = {}, []
    for n in names:
        m = compiled.search(n)
        if m is None:
            unmatched.append(n)
        else:
            groups[n] = m.group(1) if compiled.groups else m.group(0)
    if unmatched:
        raise DataError(
            root,
            [
                Problem(
                    root,
                    f"group_by regex:{pattern} matches no part of {len(unmatched)} image "
                    f"name(s): {', '.join(unmatched[:10])}",
                )
            ],
        )
    return groups


def split_names(
    names: list[str] | tuple[str, ...],
    val_fraction: float,
    seed: int,
    groups: dict[str, str] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split names into (train, val) reproducibly: same names and seed -> same split.

    The names are sorted first, so the order a filesystem lists them in does not matter.
    With ``groups`` (name -> group) whole groups go to one side (scikit-learn's
    GroupShuffleSplit: ``val_fraction`` of the groups, so roughly of the images).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(names)
    if len(ordered) < 2:
        raise ValueError(
            f"need at least 2 images to split into train and validation, got {len(ordered)}"
        )
    # heavy imports, only when splitting
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if groups is None:
        train, val = train_test_split(
            ordered, test_size=val_fraction, random_state=seed, shuffle=True
        )
        return tuple(sorted(train)), tuple(sorted(val))
    labels = [groups[n] for n in ordered]
    if len(set(labels)) < 2:
        raise ValueError(
            f"need at least 2 groups to split into train and validation, got {len(set(labels))}"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(ordered, groups=labels))
    return tuple(ordered[i] for i in train_idx), tuple(ordered[i] for i in val_idx)


def _shared_groups(a: list[str], b: list[str], groups: dict[str, str]) -> list[str]:
    """Groups with images in both ``a`` and ``b``, sorted."""
    return sorted({groups[n] for n in a} & {groups[n] for n in b})


def read_names_file(
    root: Path,
    path: str | Path,
    what: str,
    known: set[str],
    forbidden: set[str] = frozenset(),
    forbidden_what: str = "",
) -> list[str]:
    """Names of a split file; DataError listing each problem when it is missing, empty, names
    absent images or names any of ``forbidden`` (``forbidden_what`` says what they are)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(root, [Problem(path, f"{what} split file does not exist")])
    names = read_split_file(path)
    absent = [n for n in names if n not in known]
    problems = []
    if absent:
        problems.append(
            Problem(
                path, f"names {len(absent)} image(s) not in the data set: {', '.join(absent[:10])}"
            )
        )
    leaked = [n for n in names if n in forbidden]
    if leaked:
        problems.append(
            Problem(
                path, f"names {len(leaked)} image(s) of {forbidden_what}: {', '.join(leaked[:10])}"
            )
        )
    if not names:
        problems.append(Problem(path, "names no images"))
    if problems:
        raise DataError(root, problems)
    return names


def resolve_split(
    index: DataIndex,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_file: str | Path | None = None,
    group_by: str | None = None,
    test_file: str | Path | None = None,
) -> Split:
    """Choose the train/validation split of a data set.

    Images named in ``test.csv`` or ``test_file`` are held out of both. The validation names
    come from, in order: ``val_file``, the data set's ``val.csv``, or a seeded split of the
    remaining (``train.csv`` if present, else all) names; ``val_fraction`` 0 means no
    validation images: everything but the test images trains (a final model). With
    ``group_by`` the seeded split keeps each group on one side, and a given split that puts
    one group on two sides (train/val, or test/the rest) is a DataError.
    """
    known = set(index.names)
    test = set(index.splits.get("test", ()))
    if test_file is not None:
        test |= set(read_names_file(index.root, test_file, "test", known))
    pool = sorted(n for n in index.splits.get("train", index.names) if n not in test)
    groups = read_groups(index.root, sorted(known), group_by) if group_by else None
    grouped = f", grouped by {group_by}" if group_by else ""
    if test_file is not None:
        grouped += f", test images of {test_file} held out"
    if groups is not None and test:
        shared = _shared_groups(sorted(test), pool, groups)
        if shared:
            where = test_file or index.root / "test.csv"
            raise DataError(
                index.root,
                [
                    Problem(
                        Path(where),
                        f"test images share {len(shared)} group(s) ({group_by}) with the "
                        f"training images: {', '.join(shared[:5])}",
                    )
                ],
            )
    if val_file is None and "val" in index.splits:
        val_file = index.root / "val.csv"
    if val_file is not None:
        path = Path(val_file)
        held = " and ".join(
            str(p) for p in (("test.csv" if "test" in index.splits else None), test_file) if p
        )
        val = read_names_file(index.root, path, "validation", known, test, held)
        val_set = set(val)
        train = tuple(n for n in pool if n not in val_set)
        if groups is not None:
            shared = _shared_groups(sorted(val_set), list(train), groups)
            if shared:
                raise DataError(
                    index.root,
                    [
                        Problem(
                            path,
                            f"puts {len(shared)} group(s) ({group_by}) on both sides of the "
                            f"split: {', '.join(shared[:5])}",
                        )
                    ],
                )
        return Split(train=train, val=tuple(sorted(val_set)), source=f"{path}{grouped}")
    if val_fraction == 0.0:
        return Split(train=tuple(pool), val=(), source="none (val_fraction 0)")
    try:
        train, val = split_names(pool, val_fraction, seed, groups)
    except ValueError as exc:  # too few images or groups: a property of the data set
        raise DataError(index.root, [Problem(index.root, str(exc))]) from None
    return Split(train=train, val=val, source=f"seed={seed}, val_fraction={val_fraction}{grouped}")


def write_split_file(path: str | Path, names: list[str] | tuple[str, ...]) -> Path:
    """Write names one per line (the EMPS split-file format), atomically."""
    return write_text(path, "".join(f"{n}\n" for n in names))
