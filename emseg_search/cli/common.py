"""What the commands share: the offline environment, turning bad input into one line and exit
code 2 (``command``), and the inference options."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

# Set for every command, unless the caller's environment says otherwise (../shared/ENV.md):
# no Hugging Face hub retries, no albumentations version check against PyPI.
OFFLINE_DEFAULTS = {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}

# The project's bad-input errors, as (module, class). Looked up among the modules already
# imported: an exception of a class whose module was never imported cannot have been raised,
# and importing them here would import torch and Ray before `--help`.
BAD_INPUT = (
    ("emseg_search.config", "ConfigError"),
    ("emseg_search.data.errors", "DataError"),
    ("emseg_search.space.errors", "SpaceError"),
    ("emseg_search.inference.artifact", "ArtifactError"),
    ("emseg_search.inference.export.errors", "ExportSetupError"),
    ("emseg_search.models.pretrained", "WeightsUnavailableError"),
    ("emseg_search.models.state_dict", "TensorFileError"),
    ("emseg_search.search.storage", "StorageError"),
    ("emseg_search.search.driver", "ResumeError"),
    ("emseg_search.train.cluster", "ClusterError"),
    ("emseg_search.search.final", "FinalError"),
    ("emseg_search.analysis.comparison", "AnalysisError"),
    ("emseg_search.cli.common", "UsageError"),
)
PACKAGE_DIR = Path(__file__).resolve().parents[1]

Main = Callable[[list[str] | None], int]


class UsageError(ValueError):
    """Bad command-line input that a command finds itself (exit code 2)."""


def set_offline_defaults() -> None:
    """OFFLINE_DEFAULTS into the environment, where not set already."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _raised_here(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in this package (our own
    validation), not in a library it called."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input: one of BAD_INPUT, or a ValueError our code raised."""
    for module, name in BAD_INPUT:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return isinstance(exc, ValueError) and _raised_here(exc)


def command(main: Main) -> Main:
    """Decorate a command's ``main(argv) -> exit code``: set the offline environment defaults,
    and report bad input (``is_bad_input``) as one line ``error: <message>`` on stderr with
    exit code 2. Any other exception propagates (a traceback, exit code 1)."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        set_offline_defaults()
        try:
            return main(argv)
        except Exception as exc:
            if not is_bad_input(exc):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """Options `predict` and `evaluate` share: how the model runs, pixel size, progress."""
    p.add_argument("--pixel-size", type=float, help="nm per pixel: sizes also in nm")
    p.add_argument(
        "--tta", action="store_true", help="average over flips (4x slower; not for maskrcnn)"
    )
    p.add_argument(
        "--tile-size",
        type=int,
        default=1024,
        help="sliding-window tile in px at the model's scale (default 1024); larger images "
        "are tiled with overlap so memory stays bounded (maskrcnn runs images whole, up to "
        "4096 px a side)",
    )
    p.add_argument(
        "--scale",
        default=None,
        help="working scale: 'auto' chooses one per image from the size of the particles a "
        "first pass finds, rescaling images whose particles are smaller or larger than the "
        "model's training particles; a number fixes it (the model's training scale times "
        "your pixel size over the training data's, when both are known); default: the model's",
    )
    p.add_argument(
        "--seed-threshold",
        type=float,
        default=None,
        help="boundary/distance models: interior probability / normalised distance above "
        "which pixels seed a particle of the watershed; default: the model's",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="maskrcnn: keep detections scoring at least this; default: the model's",
    )
    p.add_argument(
        "--min-relative-area",
        type=float,
        default=None,
        metavar="FRACTION",
        help="drop particles smaller than this fraction of the image's area-weighted median "
        "particle area (panel letters, scale-bar ticks, specks beside large particles); "
        "default: the model's (0, off, unless it was trained with min_relative_area)",
    )
    p.add_argument(
        "--scale-tta",
        default=None,
        metavar="FACTORS",
        help="multi-scale test-time augmentation: average the logits at the working scale "
        "times each factor of a comma list, e.g. 0.71,1,1.41",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_scale(value: str | None) -> float | str | None:
    """--scale: None, 'auto' or a number in (0, MAX_SCALE] (UsageError otherwise)."""
    from emseg_search.inference.predictor import AUTO, MAX_SCALE

    if value is None or value == AUTO:
        return value
    try:
        scale = float(value)
    except ValueError:
        scale = float("nan")
    if not 0 < scale <= MAX_SCALE:
        raise UsageError(
            f"--scale must be '{AUTO}' or a number in (0, {MAX_SCALE:g}], got {value!r}"
        )
    return scale


def parse_factors(value: str | None) -> tuple[float, ...]:
    """--scale-tta: a comma list of factors in SCALE_TTA_RANGE (UsageError otherwise)."""
    from emseg_search.inference.predictor import SCALE_TTA_RANGE

    if value is None:
        return (1.0,)
    try:
        factors = tuple(float(v) for v in value.split(","))
    except ValueError:
        factors = ()
    lo, hi = SCALE_TTA_RANGE
    if not factors or any(not lo <= f <= hi for f in factors):
        raise UsageError(
            f"--scale-tta must be a comma list of factors in [{lo:g}, {hi:g}], e.g. "
            f"0.71,1,1.41; got {value!r}"
        )
    return factors


def load_predictor(args: argparse.Namespace) -> Any:
    """The inference.Predictor the shared options ask for (UsageError/ArtifactError when the
    model folder or an option is bad)."""
    from emseg_search.inference.predictor import Predictor

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise UsageError(f"--pixel-size must be > 0 nm per px, got {args.pixel_size}")
    fraction = getattr(args, "min_relative_area", None)
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise UsageError(f"--min-relative-area must lie in [0, 1), got {fraction}")
    seed = getattr(args, "seed_threshold", None)
    if seed is not None and not 0.0 < seed < 1.0:
        raise UsageError(f"--seed-threshold must lie in (0, 1), got {seed}")
    score = getattr(args, "score_threshold", None)
    if score is not None and not 0.0 < score < 1.0:
        raise UsageError(f"--score-threshold must lie in (0, 1), got {score}")
    predictor = Predictor.from_dir(
        args.model,
        tile_size=args.tile_size,
        tta=args.tta,
        device=args.device,
        scale=parse_scale(args.scale),
        scale_tta=parse_factors(args.scale_tta),
    )
    if fraction is not None:
        predictor.post = replace(predictor.post, min_relative_area=fraction)
    if seed is not None:
        if predictor.post.target not in ("boundary", "distance"):
            raise UsageError(
                f"--seed-threshold: the model's target is {predictor.post.target!r}; only "
                "boundary and distance models seed a watershed"
            )
        predictor.post = replace(predictor.post, seed_threshold=seed)
    if score is not None:
        if predictor.post.target != "instances":
            raise UsageError(
                f"--score-threshold: the model's target is {predictor.post.target!r}; only "
                "maskrcnn models score detections"
            )
        predictor.model.set_score_threshold(score)
        predictor.post = replace(predictor.post, score_threshold=score)
    return predictor


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """How the model ran, for a command's summary.json."""
    return {
        "tta": args.tta,
        "scale": args.scale or "model",
        "scale_tta": list(parse_factors(args.scale_tta)),
        "tile_size": args.tile_size,
        "seed_threshold": getattr(args, "seed_threshold", None),
        "score_threshold": getattr(args, "score_threshold", None),
        "min_relative_area": getattr(args, "min_relative_area", None),
    }
