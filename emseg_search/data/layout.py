"""Find image/mask pairs and split files in a data folder (EMPS/Kaggle or images/ + masks/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emseg_search.data.errors import DataError, Problem
from emseg_search.data.readers import IMAGE_SUFFIXES

# Folder names for masks, in the order they are looked for: EMPS calls them segmaps.
MASK_DIRS = ("segmaps", "masks", "labels")
# Mask files may repeat the image name with one of these suffixes (cells_01_mask.png).
MASK_NAME_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_seg", "_segmap")
SPLIT_FILES = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    """One micrograph and its mask, named by the image's file stem."""

    name: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class DataIndex:
    """The files of a data set, before any is decoded."""

    root: Path
    layout: str
    pairs: tuple[Pair, ...]
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """All pair names, sorted."""
        return tuple(p.name for p in self.pairs)


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Map file stem -> image files in a folder (hidden files and other types ignored)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(p.stem, []).append(p)
    return found


def read_split_file(path: Path) -> list[str]:
    """Names listed in a split file: one per line, extension optional, blank lines skipped."""
    names = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        entry = line.strip().split(",")[0].strip()
        if entry:
            names.append(
                Path(entry).stem if Path(entry).suffix.lower() in IMAGE_SUFFIXES else entry
            )
    return names


def _match_masks(
    images: dict[str, list[Path]], masks: dict[str, list[Path]]
) -> tuple[dict[str, Path], set[str]]:
    """Pair each image stem with a mask stem; returns (stem -> mask file, used mask stems)."""
    matched: dict[str, Path] = {}
    used: set[str] = set()
    for stem in images:
        for suffix in MASK_NAME_SUFFIXES:
            if stem + suffix in masks:
                matched[stem] = masks[stem + suffix][0]
                used.add(stem + suffix)
                break
    return matched, used


def scan_folder(root: str | Path) -> DataIndex:
    """Pair images with masks and read split files; raise DataError listing every problem.

    See ``scan_folder_problems`` for the layouts.
    """
    index, problems = scan_folder_problems(root)
    if problems:
        raise DataError(index.root, problems)
    return index


def scan_folder_problems(root: str | Path) -> tuple[DataIndex, list[Problem]]:
    """Pair images with masks and read split files; return the index of good pairs and problems.

    A folder that is not a data set at all raises DataError at once. Layouts:
    ``images/`` + ``segmaps/`` (EMPS/Kaggle, 16-bit instance labels) or
    ``images/`` + ``masks/`` (or ``labels/``). Optional ``train.csv``/``val.csv``/``test.csv``
    at the root name images, one per line.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, [Problem(root, "is not a folder (or does not exist)")])
    image_dir = root / "images"
    mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if not image_dir.is_dir() or mask_dir is None:
        missing = [
            f"{d}/"
            for d, ok in (("images", image_dir.is_dir()), ("segmaps|masks", mask_dir))
            if not ok
        ]
        raise DataError(
            root,
            [
                Problem(
                    root,
                    f"missing {' and '.join(missing)}; expected "
                    "images/ + segmaps/ (EMPS) or images/ + masks/",
                )
            ],
        )
    problems: list[Problem] = []
    images, masks = _image_files(image_dir), _image_files(mask_dir)
    for group in (images, masks):
        for files in group.values():
            if len(files) > 1:
                problems.append(
                    Problem(
                        files[0].parent,
                        "several files share the name "
                        f"{files[0].stem!r}: {', '.join(f.name for f in files)}",
                    )
                )
    matched, used = _match_masks(images, masks)
    for stem in sorted(set(images) - set(matched)):
        problems.append(Problem(images[stem][0], f"image has no mask in {mask_dir.name}/"))
    for stem in sorted(set(masks) - used):
        problems.append(Problem(masks[stem][0], f"mask has no image in {image_dir.name}/"))
    if not images and not masks:
        problems.append(Problem(image_dir, "contains no images (.png, .tif, .tiff, .jpg, .jpeg)"))

    splits: dict[str, tuple[str, ...]] = {}
    for split in SPLIT_FILES:
        path = root / f"{split}.csv"
        if not path.is_file():
            continue
        names = read_split_file(path)
        absent = [n for n in names if n not in images]
        if absent:
            shown = ", ".join(absent[:10]) + (
                f" and {len(absent) - 10} more" if len(absent) > 10 else ""
            )
            problems.append(Problem(path, f"names {len(absent)} image(s) not in images/: {shown}"))
        splits[split] = tuple(dict.fromkeys(names))
    pairs = tuple(Pair(s, images[s][0], matched[s]) for s in sorted(matched))
    layout = "emps" if mask_dir.name == "segmaps" else "images-masks"
    return DataIndex(root=root, layout=layout, pairs=pairs, splits=splits), problems
