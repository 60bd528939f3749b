"""`python -m emseg_search final EXPERIMENT_DIR --test-data DIR`: retrain the best configuration
of each architecture with several seeds on the search's training + validation images, score
every run on held-out test images and write final.parquet (intervals and paired tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from emseg_search.cli.common import UsageError, command
from emseg_search.data.splits import GROUP_BY_HELP


def build_parser() -> argparse.ArgumentParser:
    """Options of `final`."""
    p = argparse.ArgumentParser(
        prog="emseg-search final",
        description="The best of N trials picked on the validation split is flattered by the "
        "selection: retrain each architecture's best configuration (--seeds runs) on train + "
        "validation, score each run on held-out test images, and write "
        "EXPERIMENT_DIR/final/ (runs, images.parquet, particles.parquet) and "
        "EXPERIMENT_DIR/final.parquet (bootstrap intervals over groups, paired differences, "
        "Wilcoxon). Finished runs are kept: running it again resumes.",
    )
    p.add_argument("experiment", type=Path, help="a search's folder (results/<name>)")
    p.add_argument(
        "--test-data",
        type=Path,
        required=True,
        help="labelled test images: another folder, or the search's own folder with --split",
    )
    p.add_argument(
        "--split",
        help="which test images: 'test' (the folder's test.csv; the default when it has one), "
        "'all', or a split FILE (required when --test-data is the search's folder: the "
        "search's --test-file)",
    )
    p.add_argument("--seeds", type=int, default=3, help="training seeds per architecture (3)")
    p.add_argument(
        "--epochs",
        type=int,
        help="train each run this many epochs (default: as the search trained the trial)",
    )
    p.add_argument(
        "--archs", nargs="+", help="only these architectures (default: every one the search scored)"
    )
    p.add_argument(
        "--group-by",
        help=f"group the test images for the intervals (default: the search's): {GROUP_BY_HELP}",
    )
    p.add_argument("--workers", type=int, default=1, help="data-parallel Train workers (1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.add_argument(
        "--tta", action="store_true", help="score with flip TTA (4x slower; not for maskrcnn)"
    )
    p.add_argument(
        "--shifts",
        nargs="?",
        const="all",
        metavar="LIST",
        help="also score every run on the robustness benchmark (as `evaluate --shifts`): "
        "'all' (the default when given without a value) or a comma list; the report shows "
        "IoU and particle F1 per shift and the robustness score per architecture",
    )
    p.add_argument(
        "--shift-images",
        type=int,
        default=24,
        help="with --shifts: a seeded sample of this many test images per shift (24)",
    )
    p.add_argument("--overwrite", action="store_true", help="delete final/ and final.parquet first")
    p.add_argument("--no-report", action="store_true", help="do not rebuild the report after")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Run the final evaluation; 0 done, 2 bad input."""
    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if not args.experiment.is_dir():
        raise UsageError(f"{args.experiment}: no such experiment folder")
    from emseg_search.analysis.intervals import compare_final, verdict
    from emseg_search.results.io import read_table, write_table
    from emseg_search.results.schemas import FINAL_SCHEMA
    from emseg_search.search.final import run_final

    images_path = run_final(
        args.experiment,
        args.test_data,
        split=args.split,
        seeds=args.seeds,
        archs=args.archs,
        group_by=args.group_by,
        workers=args.workers,
        use_gpu=args.gpu,
        address=args.address,
        tta=args.tta,
        epochs=args.epochs,
        overwrite=args.overwrite,
        log=lambda msg: print(msg, flush=True),
        shifts=args.shifts,
        shift_images=args.shift_images,
    )
    images = read_table(images_path).to_pandas()
    table = compare_final(images)
    out = write_table(table.to_dict("records"), FINAL_SCHEMA, args.experiment / "final.parquet")
    print(f"\ntest scores ({out}):")
    archs = table[table["kind"] == "architecture"]
    for r in archs.itertuples():
        print(
            f"  {r.arch:<16} {r.metric:<12} {r.estimate:.4f}  95 % CI [{r.ci_low:.4f}, "
            f"{r.ci_high:.4f}]  ({r.n_seeds} seeds, {r.n_images} images, {r.n_groups} groups)"
        )
    for _, r in table[(table["kind"] == "difference") & (table["metric"] == "iou")].iterrows():
        print(
            f"  {verdict(r)}: {r['estimate']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], "
            f"Wilcoxon p {r['wilcoxon_p']:.3g}, P(better on an image) {r['prob_superiority']:.2f}"
        )
    if args.shifts:
        from emseg_search.analysis.intervals import robustness_summary_table
        from emseg_search.results.io import format_change

        summary = robustness_summary_table(args.experiment / "final")
        if summary is not None and len(summary):
            print(
                "\nIoU change vs none under each shift [95 % interval over images] "
                f"({args.experiment / 'final' / 'robustness_summary.parquet'}):"
            )
            for arch, t in summary.groupby("arch", sort=False):
                print(f"  {arch}")
                for _, r in t[t["iou_change_ci_low"].notna()].iterrows():
                    print(f"    {r['shift']:<18} {format_change(r)}")
    if not args.no_report:
        from emseg_search.analysis.report import build_report

        print(f"\nreport: {build_report(args.experiment, log=lambda m: None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
