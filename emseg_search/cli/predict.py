"""`python -m emseg_search predict MODEL_DIR INPUT... --out DIR`: segment new micrographs
(what DIR holds: inference/prediction.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emseg_search.atomic import write_text
from emseg_search.cli.common import (
    UsageError,
    add_inference_options,
    command,
    inference_options,
    load_predictor,
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `predict`."""
    p = argparse.ArgumentParser(
        prog="emseg-search predict",
        description="Segment micrographs with a trained model: masks, 16-bit particle labels, "
        "overlays, a per-particle table (particles.parquet) and a size histogram.",
    )
    p.add_argument("model", type=Path, help="model artifact folder (results/<exp>/best, .../model)")
    p.add_argument("inputs", nargs="+", help="image files or folders (PNG, TIFF, JPEG)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--split-touching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split touching particles with a distance-transform watershed (default on, as in "
        "`evaluate`: it scored particle F1 0.971 vs 0.653 without on EMPS ground truth)",
    )
    add_inference_options(p)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Predict; exit 0 when every input was segmented, 1 when some failed, 2 on bad usage."""
    from emseg_search.inference.prediction import find_inputs, predict_files

    args = build_parser().parse_args(argv)
    files, problems = find_inputs(args.inputs)
    if problems:
        raise UsageError("\n       ".join(problems))
    predictor = load_predictor(args)
    run = predict_files(
        predictor,
        files,
        args.out,
        split_touching=args.split_touching,
        pixel_size=args.pixel_size,
        progress=not args.quiet,
    )
    summary = {
        "model": str(args.model.absolute()),
        "inputs": [str(f) for f in files],
        "options": {
            **inference_options(args),
            "pixel_size_nm": args.pixel_size,
            "split_touching": args.split_touching,
        },
        "images": run.images,
        "particles": len(run.particles),
        "failures": [{"file": f, "error": e} for f, e in run.failures],
        "working_scale": run.working_scales,
    }
    write_text(run.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    seconds = predictor.throughput.seconds
    print(
        f"{run.images} image(s), {len(run.particles)} particles "
        f"({int(run.particles['touches_border'].sum())} touch the border), "
        f"{seconds:.1f} s of inference -> {run.out}/"
    )
    if run.failures:
        print(f"{len(run.failures)} input(s) failed:", file=sys.stderr)
        for f, e in run.failures:
            print(f"  {f}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
