"""`python -m emseg_search split DATA_DIR --out FILE`: write a reproducible (grouped) split file.

For a held-out test part or a validation split that shares no group (EMPS: paper) with the
rest: ``split ../emps --group-by metadata.csv:doi --fraction 0.2 --out test.csv`` names ~20 %
of the papers' images; pass the file as ``--test-file`` (search/train) or ``--val-file``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emseg_search.cli.common import UsageError, command
from emseg_search.data.splits import GROUP_BY_HELP


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `split`."""
    p = argparse.ArgumentParser(
        prog="emseg-search split",
        description="Choose a seeded share of a data set's images (whole groups with "
        "--group-by) and write their names, one per line, to --out.",
    )
    p.add_argument("data_dir", type=Path, help="data folder")
    p.add_argument("--out", type=Path, required=True, help="split file to write")
    p.add_argument("--group-by", help=GROUP_BY_HELP)
    p.add_argument(
        "--fraction", type=float, default=0.2, help="share of the groups (images) to name (0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="split file whose images are neither named nor counted (e.g. a test split, "
        "when writing a validation split of the rest); repeatable",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Write the split file; exit 0, or 2 with one message for bad data or options."""
    from emseg_search.data import read_groups, scan_folder, split_names, write_split_file
    from emseg_search.data.splits import read_names_file

    args = build_parser().parse_args(argv)
    if not 0.0 < args.fraction < 1.0:
        raise UsageError(f"--fraction must be in (0, 1), got {args.fraction}")
    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} exists; pass --overwrite to replace it")
    index = scan_folder(args.data_dir)
    excluded: set[str] = set()
    for path in args.exclude:
        excluded |= set(read_names_file(index.root, path, "--exclude", set(index.names)))
    pool = [n for n in index.names if n not in excluded]
    groups = read_groups(index.root, pool, args.group_by) if args.group_by else None
    try:
        _, chosen = split_names(pool, args.fraction, args.seed, groups)
    except ValueError as exc:
        raise UsageError(f"{args.data_dir}: {exc}") from None
    write_split_file(args.out, chosen)
    n_groups = (
        f" from {len({groups[n] for n in chosen})} of {len(set(groups.values()))} groups"
        if groups
        else ""
    )
    print(f"wrote {args.out}: {len(chosen)} of {len(pool)} images{n_groups}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
