"""What the commands share: the inference options, and turning errors into exit codes."""

from __future__ import annotations

import argparse
from typing import Any


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """Options `predict` and `evaluate` share: how the model runs, pixel size, progress."""
    p.add_argument("--pixel-size", type=float, help="nm per pixel: sizes also in nm")
    p.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    p.add_argument(
        "--tile-size",
        type=int,
        default=1024,
        help="sliding-window tile in px at the model's scale (default 1024); larger images "
        "are tiled with overlap so memory stays bounded",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_predictor(args: argparse.Namespace) -> Any:
    """The inference.Predictor the shared options ask for (ValueError/ArtifactError when the
    model folder or an option is bad)."""
    from emseg_search.inference.predictor import Predictor

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise ValueError(f"--pixel-size must be > 0 nm per px, got {args.pixel_size}")
    return Predictor.from_dir(
        args.model, tile_size=args.tile_size, tta=args.tta, device=args.device
    )
