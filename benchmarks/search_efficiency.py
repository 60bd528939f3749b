"""Search efficiency: TPE + ASHA against random search without early stopping, same trial budget.

    python benchmarks/search_efficiency.py [--space search_spaces/quick.yaml] [--seeds 3]
                                           [--trials 12] [--max-epochs 4] [--data synthetic]
                                           [--grace-period G] [--reduction-factor R]
                                           [--startup-trials N] [--report NAME] [--reuse]

Runs the space once per method and seed (one trial at a time, so compute is cumulative wall
time of the trials' epochs and validations), follows the best validation IoU found against the
cumulative training + validation seconds, and reports how much of random search's compute
TPE + ASHA needs to reach random search's final best IoU (mean over its seeds). Writes
benchmarks/results/<report>.md and <report>.png; each search's curve is kept in
search_efficiency.runs.json as soon as it ends, and a rerun with the same settings and --reuse
takes it from there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = {
    "tpe+asha": {"searcher": "optuna", "scheduler": "asha"},
    "random": {"searcher": "random", "scheduler": "none"},
}


def curve(trials, epochs) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 (pandas)
    """(cumulative seconds, best IoU so far) after every epoch, trials in the order they ran."""
    seconds, best, total, top = [], [], 0.0, 0.0
    for trial_id in trials["trial_id"]:  # rows are added as trials start
        mine = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        for row in mine.itertuples():
            total += float(row.epoch_seconds) + float(row.val_seconds or 0.0)
            if row.val_iou == row.val_iou:  # not NaN
                top = max(top, float(row.val_iou))
            seconds.append(total)
            best.append(top)
    return np.asarray(seconds), np.asarray(best)


def run_one(base: dict, method: str, seed: int, args: argparse.Namespace) -> tuple:
    """One search: its curve (cumulative seconds, best IoU so far) and its wall time."""
    import ray

    from emseg_search.results.io import load_experiment
    from emseg_search.search.driver import run_search
    from emseg_search.space.spec import space_from_dict

    values = yaml.safe_load(yaml.safe_dump(base))
    values["name"] = f"eff-{method}-{seed}"
    values["budget"] = {"num_samples": args.trials, "max_concurrent_trials": 1}
    sch = values["scheduler"]
    sch["max_epochs"] = args.max_epochs
    sch["type"] = METHODS[method]["scheduler"]
    sch["grace_period"] = min(args.grace_period or sch.get("grace_period", 1), args.max_epochs)
    if args.reduction_factor:
        sch["reduction_factor"] = args.reduction_factor
    values["searcher"] = {**values.get("searcher", {}), "type": METHODS[method]["searcher"]}
    values["searcher"]["seed"] = seed
    if args.startup_trials is not None and method == "tpe+asha":
        values["searcher"]["n_startup_trials"] = args.startup_trials
    space = space_from_dict(values, source=f"{args.space} ({method}, seed {seed})")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_search(space, Path(tmp) / values["name"], data=args.data)
        wall = time.perf_counter() - t0
        tables = load_experiment(Path(tmp) / values["name"])
    ray.shutdown()
    return (*curve(tables["trials"], tables["epochs"]), wall)


def cached_run(base: dict, method: str, seed: int, args: argparse.Namespace) -> tuple:
    """``run_one``, kept in benchmarks/results/search_efficiency.runs.json (keyed by its
    settings) as soon as it ends. With --reuse, a rerun with the same settings takes the
    searches already measured there: a cut-off benchmark loses only the search it was in, and a
    sweep of ASHA/TPE settings runs random search once (on one machine: the seconds are its)."""
    from _report import RESULTS

    store = RESULTS / "search_efficiency.runs.json"
    ignore = {"report", "seeds", "reuse"}
    if method == "random":  # no ASHA, no TPE: a sweep of their settings reuses random's runs
        ignore |= {"grace_period", "reduction_factor", "startup_trials"}
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ignore}
    key = json.dumps({**settings, "method": method, "seed": seed}, sort_keys=True)
    done = json.loads(store.read_text(encoding="utf-8")) if store.is_file() else {}
    if key in done and args.reuse:
        secs, best, wall = done[key]
        print(f"[search_efficiency] {method} seed {seed}: reusing the run in {store.name}")
        return np.asarray(secs), np.asarray(best), wall
    secs, best, wall = run_one(base, method, seed, args)
    done[key] = [secs.tolist(), best.tolist(), wall]
    RESULTS.mkdir(exist_ok=True)
    tmp = store.with_name(f".{store.name}.tmp")
    tmp.write_text(json.dumps(done, indent=1), encoding="utf-8")
    tmp.replace(store)  # atomic: a kill mid-write keeps the previous runs
    return secs, best, wall


def main() -> None:
    """Run every method x seed, then write the table and the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/quick.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--data", default=None, help="data folder (default: the space's)")
    p.add_argument("--grace-period", type=int, default=None, help="ASHA (default: the space's)")
    p.add_argument("--reduction-factor", type=int, default=None, help="ASHA (default: the space's)")
    p.add_argument(
        "--startup-trials", type=int, default=None, help="TPE's random start (default: the space's)"
    )
    p.add_argument("--report", default="search_efficiency")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="take searches with the same settings from search_efficiency.runs.json "
        "instead of running them again (only runs measured on this machine compare)",
    )
    args = p.parse_args()
    from _report import RESULTS, write_report
    from matplotlib.figure import Figure

    from emseg_search.inference.figures import save_figure

    base = yaml.safe_load(Path(args.space).read_text(encoding="utf-8"))
    sch, tpe = base["scheduler"], base.get("searcher", {})
    grace = min(args.grace_period or sch.get("grace_period", 1), args.max_epochs)
    startup = tpe.get("n_startup_trials") if args.startup_trials is None else args.startup_trials
    asha = (
        f"ASHA grace {grace}, reduction factor "
        f"{args.reduction_factor or sch.get('reduction_factor')}, TPE start-up {startup}"
    )
    runs = {m: [cached_run(base, m, s, args) for s in range(args.seeds)] for m in METHODS}
    target = float(np.mean([b[-1] for _, b, _ in runs["random"]]))
    random_compute = float(np.mean([s[-1] for s, _, _ in runs["random"]]))
    rows, fractions = [], {m: [] for m in METHODS}
    for method, curves in runs.items():
        for seed, (secs, best, wall) in enumerate(curves):
            reached = secs[best >= target]
            fraction = reached[0] / random_compute if len(reached) else float("inf")
            fractions[method].append(fraction)
            need = f"{reached[0]:.0f} s ({100 * fraction:.0f} %)" if len(reached) else "not reached"
            rows.append(
                [
                    method,
                    seed,
                    f"{best[-1]:.4f}",
                    f"{secs[-1]:.0f} s",
                    len(secs),
                    f"{wall:.0f} s",
                    need,
                ]
            )
    for method, values in fractions.items():
        hit = [v for v in values if np.isfinite(v)]
        rows.append(
            [
                f"**{method}**",
                "mean",
                f"{np.mean([b[-1] for _, b, _ in runs[method]]):.4f}",
                f"{np.mean([s[-1] for s, _, _ in runs[method]]):.0f} s",
                f"{np.mean([len(s) for s, _, _ in runs[method]]):.1f}",
                f"{np.mean([w for _, _, w in runs[method]]):.0f} s",
                f"reached by {len(hit)}/{len(values)} seeds; median "
                + (f"{100 * np.median(values):.0f} %" if len(hit) * 2 > len(values) else "-"),
            ]
        )
    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.subplots()
    for method, color in zip(METHODS, ("tab:purple", "tab:gray"), strict=True):
        for seed, (secs, best, _) in enumerate(runs[method]):
            ax.step(secs, best, where="post", color=color, alpha=0.8,
                    label=method if seed == 0 else None)  # fmt: skip
    ax.axhline(target, ls=":", color="k", lw=1, label=f"random's mean final best {target:.3f}")
    ax.set_xlabel("cumulative training + validation seconds")
    ax.set_ylabel("best validation IoU so far")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, RESULTS / f"{args.report}.png")
    head = (
        f"{args.space}: {args.trials} trials x <= {args.max_epochs} epochs per search, "
        f"{args.seeds} seeds per method, one trial at a time, {asha}; target = random search's "
        f"mean final best IoU {target:.4f}, its mean compute {random_compute:.0f} s; "
        f"{platform.machine()}, {os.cpu_count()} cores"
    )
    write_report(
        args.report,
        head,
        [
            "method",
            "seed",
            "final best IoU",
            "compute (training + validation)",
            "epochs",
            "search wall time",
            "compute to reach the target",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
