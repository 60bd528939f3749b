"""`python -m emseg_search inspect DATA_DIR`: validate a data set and print its fingerprint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emseg_search.cli.common import command


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `inspect`."""
    p = argparse.ArgumentParser(
        prog="emseg-search inspect",
        description="Validate an EM data set (EMPS images/ + segmaps/, or images/ + masks/) and "
        "print its fingerprint. Exits 1 and lists every problem when the data is not usable.",
    )
    p.add_argument("data_dir", type=Path, help="data folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", type=Path, help="also write the fingerprint JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Run `inspect`; returns the exit code (0 ok, 1 invalid data, 2 bad usage)."""
    from emseg_search.data import DataError, compute_fingerprint, load_data

    args = build_parser().parse_args(argv)
    try:
        data = load_data(args.data_dir, progress=not (args.quiet or args.json))
    except DataError as exc:  # the answer to `inspect`, not bad usage: reported, exit 1
        if args.json:
            print(
                json.dumps(
                    {
                        "root": str(exc.root),
                        "valid": False,
                        "errors": [
                            {"path": str(p.path), "message": p.message} for p in exc.problems
                        ],
                    },
                    indent=2,
                )
            )
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    fp = compute_fingerprint(data.items)
    splits = {k: len(v) for k, v in data.index.splits.items()}
    if args.out:
        fp.write_json(args.out)
    if args.json:
        print(
            json.dumps(
                {
                    "root": str(data.root),
                    "valid": True,
                    "layout": data.index.layout,
                    "splits": splits,
                    "fingerprint": fp.model_dump(),
                },
                indent=2,
            )
        )
        return 0
    split_text = ", ".join(f"{k}.csv: {n}" for k, n in splits.items()) or "none (seeded split)"
    print(f"data set   {data.root}  ({data.index.layout} layout, valid)")
    print(f"split files {split_text}")
    print(fp.to_table())
    if args.out:
        print(f"fingerprint written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
