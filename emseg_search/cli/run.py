"""`python -m emseg_search.run [SPACE.yaml]` (or `emseg-search run`): search models, write the
Parquet tables, print the leaderboard."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from emseg_search.cli.common import UsageError, command, is_bad_input
from emseg_search.data.splits import GROUP_BY_HELP


def default_space() -> Path:
    """search_spaces/quick.yaml of the working directory, else of the source checkout."""
    here = Path("search_spaces/quick.yaml")
    return here if here.is_file() else Path(__file__).resolve().parents[1] / here


def build_parser() -> argparse.ArgumentParser:
    """Options of `run`."""
    p = argparse.ArgumentParser(
        prog="emseg-search run",
        description="Search architectures, encoders, losses, augmentations and optimisers "
        "(Ray Tune + Optuna TPE + ASHA; multi-worker trials train data-parallel with Ray Train) "
        "and write "
        "<results>/<name>/: trials.parquet, epochs.parquet, experiment.json, best/.",
    )
    p.add_argument(
        "space",
        nargs="?",
        type=Path,
        default=None,
        help="search space YAML (default: search_spaces/quick.yaml)",
    )
    p.add_argument(
        "--data", help="data folder (overrides the space's `data`; 'synthetic' = the embedded set)"
    )
    p.add_argument("--group-by", help=f"split by group (overrides the space's): {GROUP_BY_HELP}")
    p.add_argument(
        "--test-file",
        type=Path,
        help="split file naming held-out test images: no trial trains or validates on them "
        "(score them later with `final`)",
    )
    p.add_argument("--name", help="experiment name (default: the space's name)")
    p.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("EMSEG_RESULTS_DIR", "results")),
        help="results folder (default: $EMSEG_RESULTS_DIR or results/); use an "
        "absolute path on shared storage on a cluster",
    )
    p.add_argument(
        "--storage",
        help="keep checkpoints and Ray Tune's state under this URI (s3://bucket/prefix, "
        "gs://..., for multi-node clusters without a shared filesystem; the tables and "
        "models stay in --results). --resume reuses the experiment's own.",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted experiment of this name"
    )
    p.add_argument("--overwrite", action="store_true", help="delete the experiment first")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="shrink the space to 2 trials x 1 epoch at a small tile size",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address (default: $RAY_ADDRESS, a running "
        "`ray start` cluster, or a new local one)",
    )
    p.add_argument(
        "--max-failures", type=int, default=1, help="retries per trial after a crash (default 1)"
    )
    p.add_argument("--top", type=int, default=10, help="leaderboard rows (default 10)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's own output (Tune's trial tables, log lines, the trials' output) instead of "
        "one line per trial event, and a traceback when the search fails; a --resume keeps "
        "the Tune tables the search started with",
    )
    return p


def open_storage(exp_dir: Path, uri: str | None, resume: bool) -> Any:
    """The experiment's search.storage.Storage: ``uri``, or on --resume the one experiment.json
    recorded (StorageError when they differ)."""
    from emseg_search.search.storage import Storage, StorageError, strip_credentials

    recorded = None
    if resume and (exp_dir / "experiment.json").is_file():
        recorded = json.loads((exp_dir / "experiment.json").read_text("utf-8")).get("storage")
    if uri and recorded and strip_credentials(uri) != recorded:
        raise StorageError(
            f"--storage {strip_credentials(uri)}: {exp_dir} was started with --storage {recorded}"
        )
    return Storage.open(exp_dir, uri or recorded)


def cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` says a file could not be written: no permission, a read-only
    filesystem, no space left (tests/faults: the results folder turns read-only mid-search)."""
    codes = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
    return isinstance(exc, OSError) and exc.errno in codes


def leaderboard(trials, top: int, objectives: dict[str, str] | None = None) -> str:  # noqa: ANN001
    """The best trials by the selection score (validation IoU, or with val_shifts the
    val_score mix, shown then: what best/ and `final` go by), with their sampled parameters;
    with several ``objectives``, their columns and the Pareto-optimal trials first."""
    from emseg_search.results.io import ranks_by_other_than_iou, selection_score

    cols = ["trial_id", "status", "best_val_iou", "best_val_dice", "epochs_run", "train_seconds"]
    params = [c for c in trials.columns if c.startswith("params_")]
    score = selection_score(trials)
    trials = trials.assign(_score=score)
    if ranks_by_other_than_iou(trials):
        cols.insert(2, "best_val_score")
    order = ["_score"]
    if objectives:
        cols = [*cols[:2], "pareto", *dict.fromkeys(f"best_{m}" for m in objectives), *cols[2:]]
        cols = list(dict.fromkeys(c for c in cols if c in trials))
        front = trials["pareto"].fillna(False).astype(bool) if "pareto" in trials else False
        trials = trials.assign(_front=front)
        order = ["_front", f"best_{next(iter(objectives))}"]
    table = trials.sort_values(order, ascending=False, na_position="last")[cols + params]
    table = table.rename(columns={c: c.removeprefix("params_") for c in params}).head(top)
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


@command
def main(argv: list[str] | None = None) -> int:
    """Run the search; returns the exit code (0 done, 1 the search failed or no trial
    produced a model, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from emseg_search.space.spec import load_space

    space = load_space(args.space or default_space())
    default_name = f"{space.name}-smoke" if args.smoke_test else space.name
    overrides = {
        **({"group_by": args.group_by} if args.group_by else {}),
        **({"test_file": str(args.test_file.absolute())} if args.test_file else {}),
    }
    if overrides:
        space = space.with_fixed(**overrides)
    if args.smoke_test:
        space = space.smoke_test()
    exp_dir = args.results / (args.name or default_name)
    storage = open_storage(exp_dir, args.storage, args.resume)
    state = storage.exists("tune")  # Ray Tune's experiment state
    if args.resume and not state:
        raise UsageError(f"--resume: {storage.describe()} holds no experiment to resume")
    started = state or (exp_dir.exists() and any(exp_dir.iterdir()))
    if started and not args.resume:
        if not args.overwrite:
            where = exp_dir if exp_dir.exists() else storage.describe()
            raise UsageError(
                f"{where} exists; pass --resume to continue it or --overwrite to delete it "
                "and start again"
            )
        shutil.rmtree(exp_dir, ignore_errors=True)
        if not storage.is_local:
            storage.fs.delete_dir_contents(storage.root, missing_dir_ok=True)

    from emseg_search.search.driver import run_search

    goal = f"metric {space.metric}"
    if space.objectives:
        wanted = ", ".join(f"{m} ({d})" for m, d in space.objectives.items())
        goal = f"objectives {wanted}, ASHA on {space.metric}"
    print(
        f"search {space.name!r}: {space.budget.num_samples} trials, {goal}, results in {exp_dir}",
        flush=True,
    )
    try:
        trials = run_search(
            space,
            exp_dir,
            data=args.data,
            resume=args.resume,
            address=args.address,
            max_failures=args.max_failures,
            storage_uri=storage.uri,
            verbose=args.verbose,
        )
    except Exception as exc:
        if is_bad_input(exc):
            raise  # one line, exit 2 (cli.common.command)
        if args.verbose:
            traceback.print_exc()
        more = "" if args.verbose else " (--verbose shows the traceback)"
        if cannot_write(exc):
            print(
                f"error: cannot write the results in {exp_dir.absolute()}: {exc}. The tables "
                "keep every result written before; make the folder writable (or free space), "
                f"then continue with --resume{more}",
                file=sys.stderr,
            )
            return 1
        print(f"error: the search failed: {type(exc).__name__}: {exc}{more}", file=sys.stderr)
        return 1
    print(f"\nleaderboard ({len(trials)} trials; {exp_dir / 'trials.parquet'}):")
    print(leaderboard(trials, args.top, space.objectives))
    if (exp_dir / "best").is_dir():
        print(f"\nbest model: {exp_dir / 'best'}")
        return 0
    print("\nno trial produced a model", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
