"""`python -m emseg_search export MODEL_DIR --format torchscript|onnx`: a verified export
(inference/export/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emseg_search.cli.common import command


def _size(text: str) -> tuple[int, int]:
    """argparse type for 'HxW'."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 256x384, got {text!r}") from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """Options of `export`."""
    from emseg_search.inference.export.formats import MODEL_FILES

    p = argparse.ArgumentParser(
        prog="emseg-search export",
        description="Export a model artifact (a training run's model/ folder) to TorchScript or "
        "ONNX, with export.json beside it (preprocessing, threshold, metrics), and check that the "
        "exported file gives the same masks as the artifact. Exits 1 if it does not.",
    )
    p.add_argument("model_dir", type=Path, help="model artifact folder")
    p.add_argument("--format", required=True, choices=sorted(MODEL_FILES), dest="fmt")
    p.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="output file, or folder if it has no suffix (default MODEL_DIR/<format>/)",
    )
    p.add_argument(
        "--check-size",
        type=_size,
        action="append",
        dest="sizes",
        metavar="HxW",
        help="verify at this input size (repeatable; default two small non-square sizes)",
    )
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Export; returns the exit code (0 verified, 1 export or verification failed, 2 bad input)."""
    from emseg_search.inference.export.errors import ExportError, ExportSetupError
    from emseg_search.inference.export.formats import export_model

    args = build_parser().parse_args(argv)
    try:
        result = export_model(args.model_dir, args.fmt, args.out, args.sizes)
    except ExportSetupError:
        raise  # bad input: exit 2 (cli.common.command)
    except ExportError as exc:  # the exporter itself failed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {result.model_path} and {result.info_path}")
    print("verification against the artifact's eager model:")
    for check in result.checks:
        print(f"  {check.summary()}")
    if not result.ok:
        print(f"error: masks differ; do not use {result.model_path}", file=sys.stderr)
        return 1
    print("OK: same masks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
