"""The Tune driver's own logic: what a --resume may change, best/ and experiment.json
written atomically, and bad input refused before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import emseg_search.train.cluster as cluster
from emseg_search.search.driver import (
    ResumeError,
    changed_keys,
    check_resume_data,
    check_resume_space,
    copy_best,
    run_search,
    write_experiment_json,
)
from emseg_search.space.spec import space_from_dict
from emseg_search.train.cluster import ClusterError

SPEC = {
    "name": "t",
    "budget": {"num_samples": 4, "time_budget_s": 100},
    "scheduler": {"type": "asha", "max_epochs": 2},
    "fixed": {"tile_size": 64, "batch_size": 2},
    "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


def edited(**changes: object) -> dict:
    """SPEC with dotted-path ``changes`` ('budget__num_samples' -> budget.num_samples)."""
    spec = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = spec
        for p in parents:
            node = node[p]
        node[leaf] = value
    return spec


def recorded(tmp_path: Path) -> dict:
    return {"space": space_from_dict(SPEC).to_dict()}


def test_changed_keys_are_dotted_paths() -> None:
    old = {"a": 1, "b": {"c": [1, 2], "d": 1}}
    new = {"a": 1, "b": {"c": [1, 3], "e": 2}}
    assert changed_keys(old, new) == [("b.c", [1, 2], [1, 3]), ("b.d", 1, None), ("b.e", None, 2)]


@pytest.mark.parametrize(
    "changes",
    [
        {"budget__num_samples": 8},
        {"budget__time_budget_s": 200},
        {"budget__time_budget_s": None},
        {"budget__num_samples": 5, "budget__time_budget_s": None},
    ],
)
def test_resume_may_extend_the_budget(changes: dict, tmp_path: Path) -> None:
    check_resume_space(recorded(tmp_path), space_from_dict(edited(**changes)), tmp_path)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"budget__num_samples": 3}, "budget.num_samples: 4 -> 3"),
        ({"budget__time_budget_s": 50}, "budget.time_budget_s: 100.0 -> 50.0"),
        ({"scheduler__max_epochs": 3}, "scheduler.max_epochs: 2 -> 3"),
        ({"fixed__batch_size": 4}, "fixed.batch_size: 2 -> 4"),
        ({"parameters__lr__high": 0.1}, "parameters.lr.high: 0.01 -> 0.1"),
        ({"fixed__loss": "focal"}, "fixed.loss: None -> 'focal'"),
    ],
)
def test_resume_refuses_other_edits_naming_them(changes: dict, named: str, tmp_path: Path) -> None:
    with pytest.raises(ResumeError) as exc:
        check_resume_space(recorded(tmp_path), space_from_dict(edited(**changes)), tmp_path)
    message = str(exc.value)
    assert named in message, message
    assert "budget.num_samples may grow" in message and "--overwrite" in message


def test_resume_refuses_a_time_budget_added_where_there_was_none(tmp_path: Path) -> None:
    old = {"space": space_from_dict(edited(budget__time_budget_s=None)).to_dict()}
    with pytest.raises(ResumeError, match=r"budget.time_budget_s: None -> 10.0"):
        check_resume_space(old, space_from_dict(edited(budget__time_budget_s=10)), tmp_path)


def test_resume_refuses_other_data(tmp_path: Path) -> None:
    data = {"data": "/d", "split": {"train": 4, "val": 1, "source": "seeded"}}
    fingerprint = {"n_images": 5, "intensity_mean": float("nan")}
    before = {**data, "data_fingerprint": fingerprint}
    check_resume_data(json.loads(json.dumps(before)), before, tmp_path)  # NaN == NaN here
    with pytest.raises(ResumeError, match=r"data: '/d' -> '/e'; split: .*source"):
        check_resume_data(
            before, {**before, "data": "/e", "split": {**data["split"], "val": 2}}, tmp_path
        )
    with pytest.raises(ResumeError, match=r"\(data_fingerprint\)"):
        check_resume_data(before, {**before, "data_fingerprint": {"n_images": 6}}, tmp_path)


def test_copy_best_replaces_best_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    for name, weight in (("a", b"A"), ("b", b"B")):
        (tmp_path / "trials" / name / "model").mkdir(parents=True)
        (tmp_path / "trials" / name / "model" / "weights.pt").write_bytes(weight)
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "model_dir": [str(tmp_path / "trials" / n / "model") for n in "ab"],
            "best_val_iou": [0.5, 0.4],
        }
    )
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "stale.txt").write_text("from an earlier run")
    assert copy_best(tmp_path, trials) == tmp_path / "best"
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["TRIAL", "weights.pt"]
    assert (tmp_path / "best" / "TRIAL").read_text() == "a\n"
    trials.loc[1, "best_val_iou"] = 0.9
    copy_best(tmp_path, trials)
    assert (tmp_path / "best" / "weights.pt").read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "trials"]  # no .tmp / .old
    assert copy_best(tmp_path, trials.assign(model_dir=None)) is None


def test_experiment_json_is_merged(tmp_path: Path) -> None:
    write_experiment_json(tmp_path, {"a": 1, "b": 2})
    write_experiment_json(tmp_path, {"b": 3})
    assert json.loads((tmp_path / "experiment.json").read_text()) == {"a": 1, "b": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.json"]


def no_ray(*args: object, **kwargs: object) -> None:
    raise AssertionError("Ray was started")


def test_an_edited_resume_is_refused_before_the_data_or_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "init_ray", no_ray)
    monkeypatch.setattr("emseg_search.train.data.prepare_data", no_ray)
    write_experiment_json(tmp_path, recorded(tmp_path))
    with pytest.raises(ResumeError, match=r"scheduler.max_epochs: 2 -> 3"):
        run_search(space_from_dict(edited(scheduler__max_epochs=3)), tmp_path, resume=True)


def test_a_gpu_space_on_a_cluster_without_gpus_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_data: Path
) -> None:
    monkeypatch.setattr(cluster, "init_ray", lambda *a, **k: {"CPU": 2.0})
    space = space_from_dict({**SPEC, "resources": {"gpus_per_worker": 1}})
    with pytest.raises(ClusterError, match=r"asks for 1 GPU\(s\) per worker.*has none"):
        run_search(space, tmp_path / "exp", data=str(tiny_data))
