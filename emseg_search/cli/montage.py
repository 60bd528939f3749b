"""`python -m emseg_search montage DATA_DIR --out PNG`: synthetic micrographs beside real ones."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from emseg_search.cli.common import UsageError, command


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `montage`."""
    p = argparse.ArgumentParser(
        prog="emseg-search montage",
        description="Draw micrographs of a data folder (rows 'synthetic') above real EMPS "
        "micrographs (rows 'EMPS') into one PNG, to see whether the synthetic set looks like EM.",
    )
    p.add_argument(
        "data_dir",
        type=Path,
        nargs="?",
        help="folder with images/ (default: generate samples from --seed)",
    )
    p.add_argument(
        "--real",
        type=Path,
        default=os.environ.get("EMSEG_EMPS_DIR"),
        help="real data folder with images/ (default: $EMSEG_EMPS_DIR, if set)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/synthetic_montage.png"),
        help="PNG to write (default results/synthetic_montage.png)",
    )
    p.add_argument("--n", type=int, default=12, help="synthetic images (default 12)")
    p.add_argument("--n-real", type=int, default=6, help="real images (default 6)")
    p.add_argument("--seed", type=int, default=0, help="which real images / samples (default 0)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Render the montage; returns the exit code (0 written, 2 bad input)."""
    from emseg_search.data.synth.montage import render_montage

    args = build_parser().parse_args(argv)
    for label, folder in (("data_dir", args.data_dir), ("--real", args.real)):
        if folder is not None and not (Path(folder) / "images").is_dir():
            raise UsageError(f"{label} {folder} has no images/ folder")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = render_montage(
        args.out,
        args.data_dir,
        real_dir=args.real,
        n_synth=args.n,
        n_real=args.n_real,
        seed=args.seed,
    )
    real = f" and {args.n_real} from {args.real}" if args.real else ""
    print(f"montage of {args.n} images{real} written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
