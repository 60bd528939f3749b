"""The EMPS comparison study, end to end: a paper-grouped test split, the search
(search_spaces/emps_study.yaml), `final` (best configuration of each architecture, N seeds, scored
on the held-out papers) and the report; prints the test table and writes
benchmarks/results/emps_study.md. Each stage resumes where it stopped when run again.

    python benchmarks/emps_study.py --data ../shared/data/emps-train [--seeds 3] [--epochs 8]

About an hour on a 2-core CPU (search ~12 min, final ~40 min at 8 epochs; machines differ by
2x).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

from _report import write_report

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "emps_study.yaml"
TEST_SPLIT = REPO / "configs" / "splits" / "emps_test_papers.csv"


def stage(name: str, args: list[str]) -> float:
    """Run one command (its output streams through); its wall time in seconds."""
    print(f"== {name}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {done.returncode}")
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the EMPS training folder")
    p.add_argument("--results", type=Path, default=REPO / "results")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8, help="final runs' epochs (8)")
    args = p.parse_args()
    data = args.data.absolute()
    exp = args.results.absolute() / "emps_study"
    times = {}
    if not TEST_SPLIT.is_file():
        times["split"] = stage(
            "split",
            [
                "emseg_search",
                "split",
                str(data),
                "--group-by",
                "metadata.csv:doi",
                "--fraction",
                "0.2",
                "--seed",
                "0",
                "--out",
                str(TEST_SPLIT),
            ],
        )
    resume = ["--resume"] if (exp / "tune").is_dir() else []
    times["search"] = stage(
        "search",
        [
            "emseg_search.run",
            str(SPACE),
            "--data",
            str(data),
            "--test-file",
            str(TEST_SPLIT),
            "--results",
            str(args.results.absolute()),
            *resume,
        ],
    )
    times["final"] = stage(
        "final",
        [
            "emseg_search",
            "final",
            str(exp),
            "--test-data",
            str(data),
            "--split",
            str(TEST_SPLIT),
            "--seeds",
            str(args.seeds),
            "--epochs",
            str(args.epochs),
            "--no-report",
        ],
    )
    times["report"] = stage("report", ["emseg_search", "report", str(exp), "--quiet"])

    import pandas as pd

    from emseg_search.results.io import read_table

    final = read_table(exp / "final.parquet").to_pandas()
    rows = []
    for r in final.itertuples():
        what = r.arch if r.kind == "architecture" else f"{r.arch} - {r.arch_b}"
        extra = (
            f"seed std {r.seed_std:.4f}"
            if r.kind == "architecture"
            else f"Wilcoxon p {r.wilcoxon_p:.3g}, P(sup) {r.prob_superiority:.2f}"
        )
        rows.append(
            [
                r.kind,
                what,
                r.metric,
                f"{r.estimate:.4f}",
                f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
                extra,
                f"{r.n_images} / {r.n_groups}",
                r.n_seeds,
            ]
        )
    trials = read_table(exp / "trials.parquet").to_pandas()
    head = (
        f"EMPS study ({platform.machine()}, {platform.processor() or 'cpu'}; "
        f"search {times['search'] / 60:.1f} min for {len(trials)} trials"
        f"{' (resumed: the earlier runs not counted)' if resume else ''}, "
        f"final {times['final'] / 60:.1f} min, report {times['report']:.0f} s; "
        f"test = {TEST_SPLIT.name}, grouped by paper). Method: {final['method'].iloc[0]}"
    )
    write_report(
        "emps_study",
        head,
        ["kind", "architecture", "metric", "estimate", "95 % CI", "", "images / papers", "seeds"],
        rows,
    )
    print(pd.Series(times).round(1).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
