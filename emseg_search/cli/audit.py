"""`python -m emseg_search audit EXPERIMENT_DIR`: check a search's folder for lost, duplicated or
disagreeing results (after a crash, a kill, a --resume, a copy); it never trains."""

from __future__ import annotations

import argparse
from pathlib import Path

from emseg_search.cli.common import UsageError, command


def build_parser() -> argparse.ArgumentParser:
    """Options of `audit`."""
    p = argparse.ArgumentParser(
        prog="emseg-search audit",
        description="Check a search's folder: every trial once in trials.parquet, every epoch "
        "once and none missing in epochs.parquet, optuna.db agreeing with the tables, best/ "
        "the best trial's model and loadable. Exit 0 consistent, 1 problems found.",
    )
    p.add_argument("experiment", type=Path, help="a search's folder (results/<name>)")
    p.add_argument("--no-model", action="store_true", help="do not load best/ (faster)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Audit the folder; 0 consistent, 1 problems found, 2 bad input."""
    args = build_parser().parse_args(argv)
    if not (args.experiment / "trials.parquet").is_file():
        raise UsageError(f"{args.experiment}: no trials.parquet; not a search's folder")
    from emseg_search.analysis.audit import audit_experiment

    report = audit_experiment(args.experiment, load_model=not args.no_model)
    print(report.to_text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
