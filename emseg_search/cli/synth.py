"""CLI: write the embedded procedural EM data set (EMPS layout) to a folder.

python -m emseg_search synth --out DIR [--n 200] [--seed 0] [--size 256] [--style mixed]
                             [--scene dense-small-carbon]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from emseg_search.cli.common import UsageError, command


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `synth`."""
    from emseg_search.data.synth.generator import SCENES, STYLES

    p = argparse.ArgumentParser(
        prog="python -m emseg_search synth",
        description="Write procedural EM micrographs with instance masks in the EMPS layout.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
    p.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    p.add_argument("--style", choices=[*STYLES, "mixed"], default="mixed", help="(default mixed)")
    p.add_argument(
        "--scene",
        choices=SCENES,
        help="draw only this layout (its style is its own; not with --style): dense-small-carbon "
        "= dense 6-16 px particles on a strongly textured carbon film at a low dose",
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of images in test.csv (default 0.2)"
    )
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out folder")
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing if --out already holds a synthetic set (synth.json); what `make run` uses",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the data set, print a one-line summary; returns the exit code
    (0 written or already there, 2 bad input)."""
    from emseg_search.data.synth.generator import write_synthetic_dataset

    args = build_parser().parse_args(argv)
    out: Path = args.out
    if args.if_missing and (out / "synth.json").is_file():
        print(f"synthetic data set already in {out} (synth.json); not regenerating")
        return 0
    if args.scene and args.style != "mixed":
        raise UsageError(f"--scene {args.scene} has its own style; leave out --style")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} is not empty; pass --overwrite to write into it anyway")
    t0 = time.perf_counter()
    write_synthetic_dataset(
        out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        test_fraction=args.test_fraction,
        progress=args.progress,
        style=None if args.style == "mixed" else args.style,
        scene=args.scene,
    )
    dt = time.perf_counter() - t0
    kind = f"scene {args.scene}" if args.scene else args.style
    print(f"wrote {args.n} synthetic images ({kind}, {args.size}px) to {out} in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
