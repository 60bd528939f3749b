"""The dashboard's data layer: the cache that rereads only a changed table, the path checks,
summaries of broken experiments, best so far, Pareto fronts and importances."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emseg_search.dashboard import data, figures, pages
from emseg_search.dashboard.data import ResultsError, TableCache


def test_an_unchanged_table_is_not_reread(tmp_path: Path, fake: Any) -> None:
    path = fake.write_experiment(tmp_path, "e", n_trials=4, n_epochs=2)
    cache = TableCache()
    first = data.load(tmp_path, "e", cache)
    reads = cache.reads
    assert reads == 3  # experiment.json, trials, epochs (final.parquet is absent)
    sig = data.signature(tmp_path, ["e"])
    again = data.load(tmp_path, "e", cache)
    assert cache.reads == reads and data.signature(tmp_path, ["e"]) == sig
    assert again.trials.equals(first.trials)
    fake.append_trial(path, 100, n_epochs=2)  # rewrites trials and epochs, atomically
    assert data.signature(tmp_path, ["e"]) != sig
    after = data.load(tmp_path, "e", cache)
    assert cache.reads == reads + 2  # only the two tables that changed
    assert len(after.trials) == 5 and "t00100" in set(after.epochs["trial_id"])


@pytest.mark.parametrize(
    "relative", ["../x", "a/../../x", "/etc/passwd", "", "a/\x00b", "..", "e/../../x"]
)
def test_resolve_inside_refuses_paths_out(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ResultsError):
        data.resolve_inside(tmp_path, relative)


def test_resolve_inside_refuses_a_symlink_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ResultsError, match="outside"):
        data.resolve_inside(root, "link/x.png")
    assert data.resolve_inside(root, "a/b.png") == (root / "a" / "b.png").resolve()


def test_experiment_names_are_direct_children(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "e", n_trials=2, n_epochs=1)
    (tmp_path / "notanexperiment").mkdir()
    assert data.experiment_dir(tmp_path, "e") == (tmp_path / "e").resolve()
    for name in ("notanexperiment", "e/..", "..", "", "nosuch"):
        with pytest.raises(ResultsError):
            data.experiment_dir(tmp_path, name)


def test_summaries_say_what_is_wrong(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "ok", n_trials=5, n_epochs=2, finished=False)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "experiment.json").write_text("{}", encoding="utf-8")
    fake.write_experiment(tmp_path, "bad", n_trials=2, n_epochs=1)
    (tmp_path / "bad" / "trials.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "experiment.json").write_text("{", encoding="utf-8")
    cache = TableCache()
    assert [p.name for p in data.list_experiment_dirs(tmp_path)] == ["bad", "badjson", "half", "ok"]
    ok = data.summary(tmp_path, "ok", cache)
    assert ok["trials"] == "5/5" and ok["status"] == "stopped" and ok["best_iou"] > 0
    assert ok["started"] == "2026-12-01 10:00" and ok["wall_time"]
    half = data.summary(tmp_path, "half", cache)
    assert half["status"] == "starting" and "no trials.parquet yet" in half["message"]
    bad = data.summary(tmp_path, "bad", cache)
    assert bad["status"] == "unreadable" and "bad/trials.parquet cannot be read" in bad["message"]
    badjson = data.summary(tmp_path, "badjson", cache)
    assert "badjson/experiment.json cannot be read" in badjson["message"]


def test_an_old_table_without_newer_columns_loads(tmp_path: Path, fake: Any) -> None:
    path = fake.write_experiment(tmp_path, "old", n_trials=4, n_epochs=2)
    trials = pd.read_parquet(path / "trials.parquet").drop(
        columns=["best_val_score", "best_val_robust_iou", "model_dir"]
    )
    trials.to_parquet(path / "trials.parquet")
    exp = data.load(tmp_path, "old", TableCache())
    assert exp.trials["best_val_robust_iou"].isna().all()
    assert exp.trials["score"].equals(exp.trials["best_val_iou"].astype(float))
    assert data.objectives(exp.trials) == [("best_val_iou", "val IoU (best epoch)", True)]


def test_best_so_far_and_compute() -> None:
    trials = pd.DataFrame(
        {"trial_id": ["a", "b", "c"], "order": [1, 2, 3], "score": [0.5, np.nan, 0.7]}
    )
    epochs = pd.DataFrame(
        {
            "trial_id": ["a", "a", "c"],
            "epoch_seconds": [10.0, 10.0, 5.0],
            "val_seconds": [1.0, 1.0, np.nan],
        }
    )
    bsf = data.best_so_far(trials, epochs)
    assert bsf["best"].tolist() == [0.5, 0.5, 0.7]
    assert bsf["compute_s"].tolist() == [22.0, 22.0, 27.0]


def test_robust_and_particle_scores_become_objectives(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "r", n_trials=6, n_epochs=2, robust=True)
    exp = data.load(tmp_path, "r", TableCache())
    assert [o[0] for o in data.objectives(exp.trials)] == [
        "best_val_iou",
        "best_val_robust_iou",
        "best_val_particle_f1",
        "best_val_count_error",
        "best_val_ms_per_megapixel",
    ]
    assert ("best_val_count_error", "count error (best epoch)", False) in data.objectives(
        exp.trials
    )
    fig = figures.pareto(exp.trials, data.objectives(exp.trials), None)
    assert fig["data"][-1]["name"] == "Pareto front"


def test_a_multi_objective_search_shows_its_own_front(tmp_path: Path, fake: Any) -> None:
    """Declared objectives come first, the front is trials.parquet's `pareto` column, joined
    only when the search had two objectives; other pairs stay exploratory fronts."""
    two = {"val_iou": "max", "val_ms_per_megapixel": "min"}
    fake.write_experiment(tmp_path, "m", n_trials=20, n_epochs=3, robust=True, objectives=two)
    exp = data.load(tmp_path, "m", TableCache())
    declared = data.declared_objectives(exp.info)
    assert declared == [
        ("best_val_iou", "val IoU (best epoch)", True),
        ("best_val_ms_per_megapixel", "ms per megapixel (best epoch)", False),
    ]
    found = data.objectives(exp.trials, declared)
    assert found[:2] == declared and len({c for c, _, _ in found}) == len(found)
    fig = figures.pareto(exp.trials, declared, None, declared=2)
    front = fig["data"][-1]
    marked = set(exp.trials.loc[exp.trials["pareto"].fillna(False).astype(bool), "trial_id"])
    assert front["name"] == "Pareto front" and set(front["customdata"]) == marked
    assert front["mode"] == "lines+markers"
    done = int((exp.trials["status"] == "completed").sum())
    title = f"Pareto front over the search's objectives ({len(marked)} of {done} completed)"
    assert fig["layout"]["title"]["text"] == title
    assert set(exp.trials.loc[exp.trials["status"] != "completed", "trial_id"]).isdisjoint(marked)

    three = {**two, "val_particle_f1": "max"}
    fake.write_experiment(tmp_path, "m3", n_trials=20, n_epochs=3, robust=True, objectives=three)
    exp3 = data.load(tmp_path, "m3", TableCache())
    fig = figures.pareto(exp3.trials, data.declared_objectives(exp3.info)[:2], None, declared=3)
    assert fig["data"][-1]["mode"] == "markers"  # a 3-objective front is no line in 2 of them
    assert "over all 3 objectives" in fig["layout"]["title"]["text"]
    columns, rows, _ = pages.leaderboard_table(exp3, exp3.trials)
    assert "pareto" in [c["id"] for c in columns]
    yes = {r["trial_id"] for r in rows if r["pareto"] == "yes"}
    assert yes == set(exp3.trials.loc[exp3.trials["pareto"].fillna(False).astype(bool), "trial_id"])
    fake.write_experiment(tmp_path, "one", n_trials=5, n_epochs=2, robust=True)
    one = data.load(tmp_path, "one", TableCache())
    assert "pareto" not in [c["id"] for c in pages.leaderboard_table(one, one.trials)[0]]
    assert data.declared_objectives({"space": {"objectives": None}}) == []


@pytest.mark.parametrize("n", [12, 150])
def test_importances_by_optuna(tmp_path: Path, fake: Any, n: int) -> None:
    fake.write_experiment(tmp_path, "e", n_trials=n, n_epochs=2)
    exp = data.load(tmp_path, "e", TableCache())
    frame, note = data.importances(exp)
    assert set(frame["param"]) <= set(exp.params) and len(frame) >= 4
    assert np.isclose(frame["importance"].sum(), 1.0)
    assert ("fANOVA" if n <= data.FANOVA_MAX_TRIALS else "PED-ANOVA") in note


def test_too_few_trials_for_importances(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "e", n_trials=2, n_epochs=1)
    frame, note = data.importances(data.load(tmp_path, "e", TableCache()))
    assert frame.empty and "too few" in note


def test_parallel_coordinates_are_architecture_aware(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "e", n_trials=20, n_epochs=2)
    exp = data.load(tmp_path, "e", TableCache())
    log = {"lr", "weight_decay"}

    def labels(arch: str | None) -> list[str]:
        fig = figures.parallel(exp.trials, exp.params, arch, log, None)
        return [d["label"] for d in fig["data"][0]["dimensions"]]

    assert "scale" not in labels(None) and "arch" in labels(None)  # UNet trials lack scale
    assert "scale" in labels("deeplabv3plus") and "scale" not in labels("unet")
    assert "lr (log)" in labels(None)
    fig = figures.parallel(exp.trials, exp.params, None, log, "t00001", limit=5)
    assert len(fig["data"][0]["dimensions"][0]["values"]) == 6  # the best 5 + the selected


def test_trial_files_and_config(tmp_path: Path, fake: Any) -> None:
    path = fake.write_experiment(tmp_path, "e", n_trials=3, n_epochs=1)
    model = path / "trials" / "t00001" / "model"
    model.mkdir(parents=True)
    (model / "config.yaml").write_text("arch: deeplabv3plus\nlr: 0.001\n", encoding="utf-8")
    (path / "trials" / "t00001" / "checkpoint_000000").mkdir()
    (path / "report").mkdir()
    (path / "report" / "index.html").write_text("<html></html>", encoding="utf-8")
    for name in ("comparison_grid.png", "sizes_deeplabv3plus.png", "sizes_unet.png", "x.png"):
        (path / "report" / name).write_bytes(b"png")
    exp = data.load(tmp_path, "e", TableCache())
    files = data.trial_files(exp, "t00001")
    assert files["checkpoints"] == ["trials/t00001/checkpoint_000000"]
    assert files["model"] == ["trials/t00001/model"]
    assert files["panels"] == ["report/comparison_grid.png", "report/sizes_deeplabv3plus.png"]
    assert data.resolved_config(exp, "t00001") == {"arch": "deeplabv3plus", "lr": 0.001}
    fallback = data.resolved_config(exp, "t00000")  # no model: the fixed and sampled values
    assert fallback["tile_size"] == 128 and fallback["arch"] == "unet"
    assert "scale" not in fallback  # a conditional left it out


def test_json_of_every_figure_has_no_nan(tmp_path: Path, fake: Any) -> None:
    """Figures go to the browser as JSON: NaN is not JSON."""
    fake.write_experiment(tmp_path, "e", n_trials=10, n_epochs=3)
    exp = data.load(tmp_path, "e", TableCache())
    t = exp.trials
    figs = [
        figures.best_so_far(data.best_so_far(t, exp.epochs), t, "compute_s", "t00001"),
        figures.distribution(t, "t00001"),
        figures.curves(exp.epochs, ["t00001", "t00003"], "val_iou", {}),
        figures.trial_curves(exp.epochs, "t00003"),
    ]
    for fig in figs:
        json.dumps(fig, allow_nan=False)


def test_signature_ignores_other_experiments(tmp_path: Path, fake: Any) -> None:
    fake.write_experiment(tmp_path, "a", n_trials=2, n_epochs=1)
    b = fake.write_experiment(tmp_path, "b", n_trials=2, n_epochs=1)
    sig_a, sig_all = data.signature(tmp_path, ["a"]), data.signature(tmp_path)
    os.utime(b / "trials.parquet", ns=(1, 1))
    assert data.signature(tmp_path, ["a"]) == sig_a and data.signature(tmp_path) != sig_all


def test_a_train_run_is_a_one_trial_experiment(tmp_path: Path, fake: Any) -> None:
    fake.write_run(tmp_path, "done", n_epochs=5, epochs=5)
    fake.write_run(tmp_path, "short", n_epochs=3, epochs=10)
    os.utime(tmp_path / "short" / "epochs.parquet", (1, 1))  # long ago: not running
    cache = TableCache()
    assert [p.name for p in data.list_experiment_dirs(tmp_path)] == ["done", "short"]
    exp = data.load(tmp_path, "done", cache)
    row = exp.trials.iloc[0]
    assert row["trial_id"] == "done" and row["status"] == "completed" and row["arch"] == "unet"
    assert row["epochs_run"] == 5 and row["best_val_iou"] == exp.epochs["val_iou"].max()
    assert set(exp.epochs["trial_id"]) == {"done"}
    assert data.load(tmp_path, "short", cache).trials.iloc[0]["status"] == "stopped"
    assert data.summary(tmp_path, "done", cache)["status"] == "finished"
    files = data.trial_files(exp, "done")
    assert files["model"] == ["model"] and files["checkpoints"][0].startswith("ray/checkpoint_")
    assert data.resolved_config(exp, "done")["lr"] == 0.001


@pytest.mark.filterwarnings("ignore:\\s*The dash_table.DataTable will be removed")
def test_final_shifts_summary_loads_and_a_stale_one_is_named(tmp_path: Path, fake: Any) -> None:
    """`final --shifts`' summary reaches the page with its intervals; rows without their
    summary (or newer than it) give a warning that says what to run, never a wrong table."""
    path = fake.write_experiment(tmp_path, "e", n_trials=4, n_epochs=2)
    fake.write_final_shifts(path, summarise=False)
    cache = TableCache()
    exp = data.load(tmp_path, "e", cache)
    assert exp.robustness is None
    assert any("robustness_summary.parquet is missing" in w for w in exp.warnings)
    assert any(f"python -m emseg_search.report {path}" in w for w in exp.warnings)
    fake.write_final_shifts(path)
    sig = data.signature(tmp_path, ["e"])
    exp = data.load(tmp_path, "e", cache)
    assert not exp.warnings and set(exp.robustness["arch"]) == {"unet", "deeplabv3plus"}
    later = (path / "final" / "robustness_summary.parquet").stat().st_mtime_ns + 10**9
    os.utime(path / "final" / "robustness.parquet", ns=(later, later))
    assert any("older than" in w for w in data.load(tmp_path, "e", cache).warnings)
    os.utime(path / "final" / "robustness_summary.parquet", ns=(later + 1, later + 1))
    assert data.signature(tmp_path, ["e"]) != sig  # the live page notices a new summary
    exp = data.load(tmp_path, "e", cache)
    # the view: per shift and architecture the change with its interval, the score last
    view = pages.robustness_view(exp.robustness)
    table = next(c for c in view.children if getattr(c, "id", None) == "robustness-table")
    rows = {r["shift"]: r for r in table.data}
    unet_half = exp.robustness.set_index(["arch", "shift"]).loc[("unet", "scale_x0.5")]
    assert rows["scale_x0.5"]["unet IoU change [95 %]"].startswith(
        f"{unet_half['iou_change']:+.3f} [{unet_half['iou_change_ci_low']:+.3f}, "
    )
    assert unet_half["iou_change_ci_high"] < -0.03  # every image lost ~0.05
    assert rows["none"]["unet IoU change [95 %]"] == ""
    assert rows["synth:sem"]["unet IoU change [95 %]"] == ""  # other images: no pairing
    assert list(rows)[-1].startswith("robustness score")
    figure = figures.shift_changes(exp.robustness)
    assert [t["name"] for t in figure["data"]] == ["unet (2 seed(s))", "deeplabv3plus (2 seed(s))"]
    assert figure["layout"]["xaxis"]["ticktext"] == ["scale_x0.5", "scale_x2", "invert"]
    json.dumps(figure, allow_nan=False)
