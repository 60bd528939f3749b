"""`python -m emseg_search report EXPERIMENT_DIR`: write EXPERIMENT_DIR/report/index.html and
its figures (offline; it never trains)."""

from __future__ import annotations

import argparse
from pathlib import Path

from emseg_search.cli.common import UsageError, command


def build_parser() -> argparse.ArgumentParser:
    """Options of `report`."""
    p = argparse.ArgumentParser(
        prog="emseg-search report",
        description="Write EXPERIMENT_DIR/report/index.html plus PNGs: leaderboards by "
        "architecture, encoder, loss and augmentation, learning curves, best so far, parameter "
        "importance, a comparison grid of images where the models differ, particle sizes and, "
        "when `final` has run, the held-out test comparison with intervals. Never trains.",
    )
    p.add_argument("experiment", type=Path, help="a search's folder (results/<name>)")
    p.add_argument("--grid-images", type=int, default=6, help="images in the comparison grid (6)")
    p.add_argument(
        "--max-eval-images",
        type=int,
        default=24,
        help="without `final`: validation images each architecture's best model is scored on "
        "to choose the grid (24)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the report's path")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Build the report; 0 done, 2 bad input."""
    args = build_parser().parse_args(argv)
    if not args.experiment.is_dir():
        raise UsageError(f"{args.experiment}: no such experiment folder")
    if args.grid_images < 1 or args.max_eval_images < 1:
        raise UsageError("--grid-images and --max-eval-images must be >= 1")
    from emseg_search.analysis.report import build_report

    index = build_report(
        args.experiment,
        grid_images=args.grid_images,
        max_eval_images=args.max_eval_images,
        log=(lambda m: None) if args.quiet else (lambda m: print(m, flush=True)),
    )
    print(index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
