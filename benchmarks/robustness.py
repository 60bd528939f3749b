"""Robustness of trained models, side by side: each model's validation images under the
benchmark's shifts (`evaluate --shifts`), and, optionally, a labelled set from another lab that
no model trained on (`evaluate --data OOD`). Prints one table and writes
benchmarks/results/robustness[-NAME].md.

    python benchmarks/robustness.py results/emps_unet_papers/model \\
        results/emps_unet_robust_papers/model --data ../shared/data/emps-train \\
        --ood ../shared/data/ood-msa-tem --max-images 24 --inference "" "--scale auto"

Each model is scored on its own validation split of --data (`--split val`; all of it for the
first column, a seeded sample under the shifts), so models trained with the same split are
compared on the same images; each `--inference` setting (evaluate's options, e.g. "--scale
auto", --tta, "" for the model as trained) is a row of its own; the settings run up to the
script's next option. A run that already wrote its tables under
--out is read back, not scored again (delete them to re-score). About 3 minutes per EMPS model
on a 2-core CPU at 24 images (DeepLabV3+ at full resolution), plus under a minute for 40 OOD
images.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from _report import write_report

REPO = Path(__file__).resolve().parents[1]
COLUMNS_SHIFTS = ("scale_x0.5", "scale_x2", "dose_5", "invert", "synth:dense-small-carbon")


def tag(model: Path, setting: str = "") -> str:
    """<experiment>-<model folder>[-<setting>], as a file name."""
    model = model.absolute()
    extra = "".join(c if c.isalnum() or c in ".," else "_" for c in setting.strip())
    return f"{model.parent.name}-{model.name}" + (f"-{extra.strip('_')}" if extra else "")


def scored(args: list[str], summary: Path) -> dict:
    """Run `evaluate` unless its summary exists; the summary JSON."""
    if not summary.is_file():
        cmd = [sys.executable, "-m", "emseg_search", "evaluate", *args, "--quiet"]
        print("==", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"evaluate failed with exit code {done.returncode}")
    return json.loads(summary.read_text())


def split_inference(argv: list[str], options: set[str]) -> tuple[list[str], list[str] | None]:
    """Take ``--inference``'s settings out of ``argv`` (argparse refuses a value such as
    "--tta" that looks like an option): every word after it up to this script's next option.
    Returns the other words and the settings (None when ``--inference`` is not given)."""
    if "--inference" not in argv:
        return argv, None
    i = argv.index("--inference")
    j = i + 1
    while j < len(argv) and argv[j] not in options:
        j += 1
    if j == i + 1:
        raise SystemExit('robustness.py: --inference needs at least one setting, e.g. "" "--tta"')
    return argv[:i] + argv[j:], argv[i + 1 : j]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="model artifact folders")
    p.add_argument("--data", type=Path, required=True, help="the models' training data")
    p.add_argument("--ood", type=Path, help="a labelled folder from elsewhere (never trained on)")
    p.add_argument("--max-images", type=int, default=24, help="validation images sampled (24)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "robustness")
    p.add_argument("--name", default="", help="suffix of the results file")
    p.add_argument(
        "--inference",
        nargs="+",
        default=[""],
        help='evaluate options per row, e.g. "" "--scale auto" (default: the model as trained)',
    )
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, ``--inference``'s settings taken out first (split_inference)."""
    p = build_parser()
    argv, settings = split_inference(argv, {o for a in p._actions for o in a.option_strings})
    args = p.parse_args(argv)
    if settings is not None:
        args.inference = settings
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for setting in args.inference:
            rows.append(score_model(model, setting.split(), tag(model, setting), args))
    columns = [
        "model",
        "inference",
        "val IoU / particle F1 (all)",
        "robustness IoU / F1",
        f"IoU none ({args.max_images})",
        *(f"IoU {s}" for s in COLUMNS_SHIFTS),
        "IoU change x0.5 / x2 [95 % over images]",
    ]
    if args.ood:
        columns.append(f"{args.ood.name} IoU / F1")
    cpu = platform.processor() or platform.machine()
    head = (
        f"Robustness benchmark (`evaluate --shifts`, {args.max_images} validation images sampled "
        f"with seed 0, 16 images per synthetic domain; robustness = mean over 17 shifts and "
        f"domains), {cpu}, {Path(args.data).name}"
    )
    write_report(f"robustness{'-' + args.name if args.name else ''}", head, columns, rows)
    return 0


def changes(rows: Path) -> dict[str, str]:
    """Per shift, its IoU change against ``none`` with the 95 % interval paired over images
    (``analysis.intervals``), computed from the rows, so tables written before the interval
    existed get it too."""
    import pandas as pd

    from emseg_search.analysis.intervals import shift_change_intervals
    from emseg_search.results.io import format_change

    table = shift_change_intervals(pd.read_parquet(rows).to_dict("records"))
    return {r["shift"]: format_change(r) for r in table.to_dict("records")}


def score_model(model: Path, options: list[str], name: str, args: argparse.Namespace) -> list[str]:
    """One row: the model with evaluate ``options`` on all its validation images, under the
    shifts, and on the OOD set."""
    data = str(args.data.absolute())
    val_out = args.out / f"{name}-val.parquet"
    val = scored(
        [str(model.absolute()), "--data", data, "--split", "val", "--out", str(val_out), *options],
        val_out.with_suffix(".json"),
    )
    out = args.out / f"{name}-shifts.parquet"
    shifts = scored(
        [str(model.absolute()), "--data", data, "--split", "val", "--shifts",
         "--max-images", str(args.max_images), "--out", str(out), *options],
        out.with_suffix(".json"),
    )  # fmt: skip
    per = {r["shift"]: r for r in shifts["per_shift"]}
    delta = changes(out)
    row = [
        tag(model),
        " ".join(options) or "as trained",
        f"{val['iou']:.4f} / {val['particle_f1']:.3f}",
        f"**{shifts['robustness_iou']:.4f}** / {shifts['robustness_f1']:.3f}",
        f"{shifts['reference_iou']:.3f}",
        *(f"{per[s]['iou']:.3f}" if s in per else "" for s in COLUMNS_SHIFTS),
        " / ".join(delta.get(s, "") for s in ("scale_x0.5", "scale_x2")),
    ]
    if args.ood:
        ood_out = args.out / f"{name}-on-{args.ood.name}.parquet"
        ood = scored(
            [str(model.absolute()), "--data", str(args.ood.absolute()), "--out", str(ood_out),
             *options],
            ood_out.with_suffix(".json"),
        )  # fmt: skip
        row.append(f"{ood['iou']:.4f} / {ood['particle_f1']:.3f}")
    return row


if __name__ == "__main__":
    raise SystemExit(main())
