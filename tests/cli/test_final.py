"""`final` end to end: a real tiny search, then each architecture's best configuration
retrained with 2 seeds and scored on the held-out test.csv, resumed, and reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import cli_env

from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.results.io import read_table

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_final_retrains_scores_resumes_and_reports(tmp_path: Path) -> None:
    data = ensure_synthetic_data(tmp_path / "synth", n=24, seed=5, size=64)
    space = {
        "name": "tiny",
        "data": str(data),
        "budget": {"num_samples": 2},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "scheduler": {"type": "asha", "max_epochs": 1, "grace_period": 1, "reduction_factor": 2},
        "searcher": {"type": "random", "seed": 0},
        "fixed": {
            "tile_size": 64,
            "tiles_per_image": 1,
            "batch_size": 4,
            "encoder": "resnet18",
            "augment": "flips",
            "warmup_epochs": 0,
        },
        "parameters": {"arch": {"type": "categorical", "choices": ["unet", "fpn"]}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    results = tmp_path / "results"
    out = cli("emseg_search.run", str(path), "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    exp = results / "tiny"
    trials = read_table(exp / "trials.parquet").to_pandas()
    archs = sorted(set(trials["params_arch"]))

    final_cmd = ["emseg_search.final", str(exp), "--test-data", str(data)]
    final_cmd += ["--group-by", r"regex:^synth_(\d{4})"]
    settings = ["--seeds", "2", "--epochs", "2"]
    out = cli(*final_cmd, *settings)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{len(archs)} architecture(s) x 2 seed(s)" in out.stdout
    # --epochs: each run trains 2 epochs though the search trained 1
    run_epochs = read_table(exp / "final" / "runs" / archs[0] / "seed0" / "epochs.parquet")
    assert run_epochs.num_rows == 2
    images = read_table(exp / "final" / "images.parquet").to_pandas()
    test_names = (data / "test.csv").read_text().split()
    assert len(images) == len(archs) * 2 * len(test_names)
    assert set(images["name"]) == set(test_names) and set(images["arch"]) == set(archs)
    # groups from --group-by: tens of images
    assert all(g == n[6:10] for g, n in zip(images["group"], images["name"], strict=True))
    final = read_table(exp / "final.parquet").to_pandas()
    rows = final[final["kind"] == "architecture"]
    assert len(rows) == len(archs) * 3 and (rows["n_seeds"] == 2).all()
    assert ((rows["ci_low"] <= rows["estimate"]) & (rows["estimate"] <= rows["ci_high"])).all()
    for arch in archs:
        assert (exp / "final" / "runs" / arch / "seed1" / "model" / "weights.pt").is_file()
    index = exp / "report" / "index.html"
    assert index.is_file() and "Held-out test comparison" in index.read_text()
    assert "Robustness (held-out" not in index.read_text()  # not asked for
    assert (exp / "report" / "comparison_grid.png").is_file()

    # run again with --shifts: every finished run is kept, nothing retrains, and each run is
    # scored on 3 test images per shift and on 16 synthetic SEM images
    shifts = ["--shifts", "scale_x0.5,invert,synth:sem", "--shift-images", "3"]
    again = cli(*final_cmd, *settings, *shifts)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, kept") == len(archs) * 2
    assert again.stdout.count("robustness: IoU") == len(archs) * 2
    shifted = read_table(exp / "final" / "robustness.parquet").to_pandas()
    per_run = 3 * 3 + 16  # none, scale_x0.5 and invert x 3 images, + the domain's
    assert len(shifted) == len(archs) * 2 * per_run
    assert set(shifted["shift"]) == {"none", "scale_x0.5", "invert", "synth:sem"}
    assert set(shifted.loc[shifted["shift"] == "none", "name"]) <= set(test_names)
    # the per-architecture summary the report and the dashboard read, and its printout: each
    # shift of the test images with its change and interval, per architecture
    summary = read_table(exp / "final" / "robustness_summary.parquet").to_pandas()
    assert len(summary) == len(archs) * 4 and (summary["seeds"] == 2).all()
    assert (summary.loc[summary["shift"] == "none", "images"] == 3).all()  # not image x seed
    paired = summary[summary["shift"].isin(["scale_x0.5", "invert"])]
    assert paired["iou_change_ci_low"].notna().all()
    assert summary.loc[summary["shift"] == "synth:sem", "iou_change_ci_low"].isna().all()
    block = again.stdout.split("IoU change vs none under each shift")[1]
    assert block.count("scale_x0.5") == len(archs) and block.count("invert") == len(archs)
    assert re.search(r"invert +[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", block)
    page = index.read_text()
    assert "Robustness (held-out test images under controlled shifts)" in page
    assert "robustness score" in page
    assert page.count("IoU change vs none [95 %]") == len(archs)
    assert re.search(r"<td>[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]</td>", page)
    for arch in archs:
        assert (exp / "report" / f"robustness_{arch}.png").stat().st_size > 0
    # and again: the runs and their robustness scores are kept
    third = cli(*final_cmd, *settings, *shifts, "--no-report")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "robustness: IoU" not in third.stdout
    # other settings on a resumed final are refused, naming them
    other = cli(*final_cmd, "--tta")
    assert other.returncode == 2 and "other settings" in other.stderr
    assert "Traceback" not in other.stderr
