"""`python -m emseg_search train [CONFIG.yaml] [--FIELD VALUE ...]`: train one configuration."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from emseg_search.cli.common import UsageError, command
from emseg_search.config import ConfigError, TrialConfig, field_type


def _none_or(kind: type) -> Any:
    """An argparse type that reads 'none'/'null' as None."""

    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """Options: run options plus one flag per TrialConfig field (YAML values are overridden)."""
    p = argparse.ArgumentParser(
        prog="emseg-search train",
        description="Train one configuration with Ray Train (data-parallel) and write "
        "<results>/<name>/: config.yaml, epochs.parquet and the model artifact in model/. "
        "Without a split (val_file / val_fraction in the YAML or as flags, or a val.csv in the "
        "data folder) every image trains and the last epoch is the model.",
    )
    p.add_argument("config", nargs="?", type=Path, help="YAML file of TrialConfig fields")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Train workers (default 1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl, mixed precision)")
    p.add_argument("--name", help="run name (default: the config file's stem, else ARCH-ENCODER)")
    p.add_argument("--results", type=Path, default=Path("results"), help="default results/")
    p.add_argument("--resume", action="store_true", help="continue the run of this name")
    p.add_argument("--overwrite", action="store_true", help="delete the run of this name first")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    fields = p.add_argument_group("configuration fields (override the YAML)")
    for name, info in TrialConfig.model_fields.items():
        kind, choices, optional = field_type(name)
        flag = "--" + name.replace("_", "-")
        help_ = f"{info.description + '; ' if info.description else ''}default {info.default!r}"
        help_ = help_.replace("%", "%%")  # argparse formats help strings with %
        if typing.get_origin(kind) in (list, tuple):  # a comma list: --val-shifts a,b
            fields.add_argument(
                flag,
                dest=name,
                default=argparse.SUPPRESS,
                help=help_ + " (a comma list; 'none' for an empty one)",
                type=_comma_list,
                metavar=name.upper(),
            )
        elif kind is bool:
            fields.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_,
            )
        else:
            fields.add_argument(
                flag,
                dest=name,
                default=argparse.SUPPRESS,  # absent: the YAML's value; `none` sets None
                choices=choices,
                help=help_,
                type=_none_or(kind) if optional else kind,
                metavar=name.upper(),
            )
    return p


def _comma_list(value: str) -> list[str]:
    """A comma-separated flag value as a list ('none' or '': empty)."""
    if value.strip().lower() in ("", "none"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def changed_fields(saved: Path, cfg: TrialConfig) -> str | None:
    """What differs between a run's saved config.yaml and ``cfg`` (other than ``epochs``,
    which a resume may extend), as one message; None when nothing does or nothing was saved."""
    if not saved.is_file():
        return None
    try:
        old = TrialConfig.from_yaml(saved).to_dict()
    except ConfigError as exc:
        return f"cannot read the run's configuration: {exc}; pass --overwrite to start again"
    diffs = [
        f"{k}: {old[k]!r} -> {v!r}"
        for k, v in cfg.to_dict().items()
        if k != "epochs" and old.get(k) != v
    ]
    if not diffs:
        return None
    return (
        f"{saved} was trained with other values ({'; '.join(diffs)}); resume with the same "
        "configuration (only --epochs may grow), or pass --overwrite or another --name"
    )


@command
def main(argv: list[str] | None = None) -> int:
    """Train; returns the exit code (0 done, 1 training failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in TrialConfig.model_fields if hasattr(args, k)}
    cfg = (
        TrialConfig.from_yaml(args.config, **overrides)
        if args.config
        else TrialConfig.from_dict(overrides, source="command line")
    )
    if not {"val_file", "val_fraction"} & cfg.model_fields_set:
        # no split given: a final model, trained on every image (a data set's val.csv or
        # test.csv still hold theirs out); --val-file / --val-fraction measure one instead
        cfg = cfg.model_copy(update={"val_fraction": 0.0})
    name = args.name or (args.config.stem if args.config else f"{cfg.arch}-{cfg.encoder}")
    run_dir = args.results / name

    from emseg_search.train.driver import TrainingFailed, clear_run, run_training

    if run_dir.exists() and any(run_dir.iterdir()):
        if args.overwrite:
            clear_run(run_dir)
        elif not args.resume:
            raise UsageError(
                f"{run_dir} exists; pass --resume to continue it or --overwrite to start again"
            )
        elif (changed := changed_fields(run_dir / "config.yaml", cfg)) is not None:
            raise UsageError(f"--resume: {changed}")
    try:
        outcome = run_training(
            cfg, run_dir, workers=args.workers, use_gpu=args.gpu, address=args.address
        )
    except TrainingFailed as exc:  # Ray's traceback is in the log above; one line to act on
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if outcome.stop_reason:
        print(f"stopped: {outcome.stop_reason}", file=sys.stderr)
    if outcome.model_dir is None:
        print(f"error: no model was saved in {run_dir}", file=sys.stderr)
        return 1
    scored = (
        f"best validation IoU {outcome.best_val_iou:.4f}"
        if outcome.best_val_iou is not None
        else "trained without a validation split (pass --val-file or --val-fraction to hold "
        "images out)"
    )
    print(
        f"{scored}; model artifact in {outcome.model_dir}; epochs in {run_dir / 'epochs.parquet'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
