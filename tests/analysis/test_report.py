"""The report from an experiment folder (no Ray, no training): tiny random-init models on a
tiny data folder stand in for a search's trials."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_folder, write_tiny_artifact

from emseg_search.analysis.report import build_report, choose_images
from emseg_search.cli.report import main as report_main
from emseg_search.results.io import write_table
from emseg_search.results.schemas import EPOCH_SCHEMA, FINAL_IMAGE_SCHEMA, trial_schema

ARCHS = ("unet", "fpn")


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A finished two-architecture search over an 8-image folder, models written."""
    data = make_folder(tmp_path / "data", n=8, size=(64, 64))
    exp = tmp_path / "results" / "exp"
    trials, epochs = [], []
    for i, arch in enumerate(ARCHS * 2):
        tid = f"t{i}"
        model = write_tiny_artifact(
            exp / "trials" / tid / "model", seed=i, arch=arch, data=str(data), val_fraction=0.5
        )
        best = 0.4 + 0.1 * i
        trials.append(
            {
                "trial_id": tid,
                "status": "completed" if i < 3 else "pruned",
                "best_val_iou": best,
                "last_val_iou": best,
                "best_epoch": 1,
                "epochs_run": 2,
                "train_seconds": 3.0,
                "model_dir": str(model),
                "params_arch": arch,
                "params_lr": 1e-3 * (i + 1),
            }
        )
        for e in range(2):
            epochs.append(
                {
                    "trial_id": tid,
                    "epoch": e,
                    "val_iou": best - 0.1 * (1 - e),
                    "epoch_seconds": 1.5,
                    "val_seconds": 0.2,
                }
            )
    write_table(trials, trial_schema(["arch", "lr"]), exp / "trials.parquet")
    write_table(epochs, EPOCH_SCHEMA, exp / "epochs.parquet")
    info = {
        "name": "exp",
        "space": {
            "name": "exp",
            "description": "two archs",
            "budget": {"num_samples": 4},
            "fixed": {"encoder": "resnet18"},
        },
        "data": str(data),
        "split": {"train": 4, "val": 4, "source": "seed=0, val_fraction=0.5"},
        "versions": {"torch": "x", "cpu": "x86_64 AVX2"},
        "started_at": "2026-12-05T00:00:00+00:00",
        "finished_at": "2026-12-05T00:01:00+00:00",
    }
    (exp / "experiment.json").write_text(json.dumps(info))
    return exp


def referenced_images(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


def test_report_without_final_says_validation_and_draws_every_figure(experiment: Path) -> None:
    lines: list[str] = []
    index = build_report(experiment, grid_images=3, log=lines.append)
    assert index == experiment / "report" / "index.html"
    text = index.read_text()
    assert "Not run yet" in text and "flattered by" in text
    pngs = referenced_images(index)
    assert {
        "comparison_grid.png",
        "learning_curves.png",
        "best_so_far.png",
        "importance.png",
        "scores_by_arch.png",
        "sizes_unet.png",
        "sizes_fpn.png",
    } <= set(pngs)
    for png in pngs:  # every figure it names is there and is a PNG
        assert (index.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "By architecture" in text and "fpn" in text and "unet" in text
    assert "under the val_shifts" not in text  # the space scored no shifts
    assert any("scored" in m and "validation images" in m for m in lines)


def test_report_of_a_multi_objective_search_shows_its_pareto_front(experiment: Path) -> None:
    """objectives in experiment.json: a section with the front's figure and its trials (the
    table predates the `pareto` column, so the report computes it)."""
    from emseg_search.results.io import read_table

    trials = read_table(experiment / "trials.parquet").to_pandas()
    trials["best_val_particle_f1"] = [0.9, 0.3, 0.4, 0.99]  # t3 is pruned: not compared
    trials = trials.drop(columns="pareto")
    write_table(
        trials.to_dict("records"),
        trial_schema(["arch", "lr"]).remove(trial_schema([]).get_field_index("pareto")),
        experiment / "trials.parquet",
    )
    info = json.loads((experiment / "experiment.json").read_text())
    info["space"]["objectives"] = {"val_iou": "max", "val_particle_f1": "max"}
    (experiment / "experiment.json").write_text(json.dumps(info))
    index = build_report(experiment, grid_images=2, log=lambda _: None)
    text = index.read_text()
    assert "pareto.png" in referenced_images(index)
    assert (index.parent / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = text.split("<h2>Objectives: the Pareto front", 1)[1].split("<h2>", 1)[0]
    assert "2 of the 3 completed trials" in section
    front = re.findall(r"<tr><td>(t\d)</td>", section)
    assert front == ["t2", "t0"]  # by the first objective, best first


def test_report_shows_the_best_trials_iou_under_each_val_shift(experiment: Path) -> None:
    """A space with val_shifts: the best trials' IoU under each shift at their best epoch,
    beside their mean (best_val_robust_iou), in the section on the search."""
    from emseg_search.results.io import read_table

    trials = read_table(experiment / "trials.parquet").to_pandas()
    trials["best_val_robust_iou"] = [0.5, 0.6, 0.55, 0.45]
    write_table(
        trials.to_dict("records"), trial_schema(["arch", "lr"]), experiment / "trials.parquet"
    )
    epochs = read_table(experiment / "epochs.parquet").to_pandas()
    # at the best epoch (1) t1 scores 0.9 under scale_x2 and 0.3 on the dense scene
    shifts = [
        {"scale_x2": 0.1 * i + e / 10, "synth:dense-small-carbon": 0.2 * e + 0.1}
        for i in range(4)
        for e in range(2)
    ]
    shifts[3] = {"scale_x2": 0.9, "synth:dense-small-carbon": 0.3}
    epochs["val_shift_iou"] = shifts
    write_table(epochs.to_dict("records"), EPOCH_SCHEMA, experiment / "epochs.parquet")
    text = build_report(experiment, grid_images=2, log=lambda _: None).read_text()
    section = text.split("<h3>Best trials under the val_shifts</h3>", 1)[1].split("<h", 1)[0]
    head = re.findall(r"<th>([^<]+)</th>", section)
    assert head == ["trial_id", "scale_x2", "synth:dense-small-carbon", "best_val_robust_iou"]
    rows = re.findall(r"<tr><td>(t\d)</td><td>([\d.]+)</td><td>([\d.]+)</td>", section)
    assert ("t1", "0.9000", "0.3000") in rows and len(rows) == 4


def test_report_with_final_shows_intervals_and_test_images(experiment: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"img{i:02d}" for i in range(8)]
    rows = []
    for arch, base in (("unet", 0.8), ("fpn", 0.7)):
        for seed in (0, 1):
            for j, name in enumerate(names):
                tp = int(100 * (base + rng.uniform(-0.05, 0.05)))
                rows.append(
                    {
                        "arch": arch,
                        "seed": seed,
                        "trial_id": f"t-{arch}",
                        "name": name,
                        "group": f"paper{j // 2}",
                        "tp_px": tp,
                        "fp_px": 100 - tp,
                        "fn_px": 0,
                        "tn_px": 1000,
                        "iou": tp / 100,
                        "dice": 0.8,
                        "n_true": 2,
                        "n_pred": 2,
                        "particle_tp": 1,
                        "particle_f1": 0.5,
                    }
                )
    final = experiment / "final"
    write_table(rows, FINAL_IMAGE_SCHEMA, final / "images.parquet")
    models = {
        a: str(experiment / "trials" / ("t0" if a == "unet" else "t1") / "model") for a in ARCHS
    }
    runs = {f"{a}/seed{s}": {"model_dir": models[a]} for a in ARCHS for s in (0, 1)}
    (final / "final.json").write_text(
        json.dumps(
            {
                "test_data": str(Path(experiment).parents[1] / "data"),
                "split": "all images",
                "split_names": 8,
                "n_groups": 4,
                "seeds": 2,
                "runs": runs,
                "finished_at": "2026-12-05T01:00:00+00:00",
            }
        )
    )
    assert report_main([str(experiment), "--grid-images", "3", "--quiet"]) == 0
    index = experiment / "report" / "index.html"
    text = index.read_text()
    assert "Not run yet" not in text and "Paired differences" in text
    assert re.search(r"unet</td><td>t-unet</td><td>0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]", text)
    assert "unet - fpn" in text and "4 groups" in text
    for png in referenced_images(index):
        assert (index.parent / png).is_file(), png
    assert "final_intervals.png" in referenced_images(index)


def test_grid_images_span_the_paired_difference() -> None:
    per_image = pd.DataFrame(
        {
            "name": [f"i{k}" for k in range(5)] * 2,
            "arch": ["a"] * 5 + ["b"] * 5,
            "iou": [0.9, 0.8, 0.7, 0.6, 0.5] + [0.5, 0.6, 0.7, 0.8, 0.9],
        }
    )
    chosen = choose_images(per_image, ["a", "b"], 3)
    assert [n for n, _ in chosen] == ["i0", "i2", "i4"]
    assert "a ahead by most" in chosen[0][1] and "+0.400" in chosen[0][1]
    assert "median" in chosen[1][1] and "b ahead by most" in chosen[2][1]


def test_report_names_a_folder_that_is_no_experiment(tmp_path: Path, capsys) -> None:
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no trials.parquet" in err and "Traceback" not in err
    assert report_main([str(tmp_path / "absent")]) == 2


def test_a_search_ranked_on_val_score_is_reported_by_it_with_its_sampled_parameters(
    experiment: Path,
) -> None:
    """With val_shifts the search ranks on val_score, not the IoU: the leaderboards, the best
    trials and the figures follow it (as best/ and `final` do), the sampled parameters are
    columns and, where a few values repeat (a grid), leaderboards of their own."""
    from emseg_search.results.io import read_table

    trials = read_table(experiment / "trials.parquet").to_pandas()
    # IoU ranks t3 > t2 > t1 > t0; the score under the shifts ranks t0 first
    trials["best_val_score"] = [0.9, 0.5, 0.6, 0.55]
    trials["best_val_robust_iou"] = [0.95, 0.4, 0.5, 0.3]
    trials["params_synthetic_mix"] = [0.75, 1.0, 0.75, 1.0]
    write_table(
        trials.to_dict("records"),
        trial_schema(["arch", "lr", "synthetic_mix"]),
        experiment / "trials.parquet",
    )
    epochs = read_table(experiment / "epochs.parquet").to_pandas()
    epochs["val_robust_iou"] = 0.5
    epochs["val_score"] = epochs["val_iou"] - 0.01
    write_table(epochs.to_dict("records"), EPOCH_SCHEMA, experiment / "epochs.parquet")
    text = build_report(experiment, grid_images=2, log=lambda _: None).read_text()
    search = text.split("<h2>The search", 1)[1].split("<h2>", 1)[0]
    assert "Trials rank by val_score" in search
    best = search.split("<h3>Best trials</h3>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>(t\d)</td>", best) == ["t0", "t2", "t3", "t1"]
    head = re.findall(r"<th>([^<]+)</th>", best)
    assert head[:4] == ["trial_id", "status", "lr", "synthetic_mix"]
    assert "encoder" not in head  # every trial's: named once above the table
    assert "Every trial: encoder <code>resnet18</code>" in search
    board = search.split("<h3>By architecture</h3>", 1)[1].split("</table>", 1)[0]
    # unet's trials t0 and t2 score 0.9 and 0.6: its best is t0's score, not t2's IoU (0.6)
    assert re.search(r"<td>unet</td><td>0.9000</td><td>0.7500</td><td>2</td>", board)
    mix = search.split("<h3>By synthetic_mix</h3>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>([\d.]+)</td><td>([\d.]+)</td>", mix) == [
        ("0.75", "0.9000"),
        ("1", "0.5500"),
    ]
    assert "<h3>By lr</h3>" not in search  # one trial per value: no leaderboard
    assert "0.0010" not in best and "<td>0.001</td>" in best  # lr as 4 significant digits
