"""`run`'s exit codes without a search: bad input is 2 with one line, before Ray starts; a
crash inside the search is 1 with its message (the traceback only with --verbose)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import emseg_search.train.cluster as cluster
from emseg_search.cli.run import main
from emseg_search.space.spec import load_space

SPEC = {
    "name": "tiny",
    "budget": {"num_samples": 2, "time_budget_s": 60},
    "scheduler": {"type": "asha", "max_epochs": 2},
    "fixed": {"tile_size": 64, "batch_size": 2},
    "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


@pytest.fixture
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emseg_search.data.synth.default_set import ensure_synthetic_data

    return ensure_synthetic_data(tmp_path_factory.mktemp("d") / "synth", n=6, size=64)


def space_file(tmp_path: Path, **changes: object) -> Path:
    spec = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        section, field = key.split("__")
        spec.setdefault(section, {})[field] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def no_ray(*args: object, **kwargs: object) -> None:
    raise AssertionError("Ray was started")


def started_experiment(tmp_path: Path, space: Path) -> Path:
    """A results folder as an interrupted search leaves it (for --resume)."""
    exp = tmp_path / "results" / "tiny"
    (exp / "tune").mkdir(parents=True)
    info = {"space": load_space(space).to_dict(), "storage": None}
    (exp / "experiment.json").write_text(json.dumps(info))
    return exp


def test_resume_with_an_edited_space_is_refused_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cluster, "init_ray", no_ray)
    space = space_file(tmp_path)
    exp = started_experiment(tmp_path, space)
    edited = space_file(tmp_path, scheduler__max_epochs=3, fixed__batch_size=4)
    results = ["--results", str(tmp_path / "results"), "--resume"]
    assert main([str(edited), *results]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --resume: the search space differs")
    assert "scheduler.max_epochs: 2 -> 3" in err and "fixed.batch_size: 2 -> 4" in err
    assert "budget.num_samples may grow" in err
    assert (
        json.loads((exp / "experiment.json").read_text())["space"]["scheduler"]["max_epochs"] == 2
    )  # not rewritten


def test_a_crash_in_the_search_is_exit_1_with_its_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data: Path,
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the raylet died")

    monkeypatch.setattr(cluster, "init_ray", crash)
    args = [str(space_file(tmp_path)), "--data", str(data), "--results", str(tmp_path / "r")]
    assert main(args) == 1  # not 2: nothing was wrong with the input
    err = capsys.readouterr().err
    assert "error: the search failed: RuntimeError: the raylet died" in err
    assert "Traceback" not in err and "--verbose" in err
    assert main([*args, "--overwrite", "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_results_that_cannot_be_written_are_exit_1_saying_what_to_do(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data: Path,
) -> None:
    """The results folder turned read-only (or the disk filled) mid-search: tests/faults."""
    import errno

    def crash(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "r/x/.t.tmp"))

    monkeypatch.setattr(cluster, "init_ray", crash)
    args = [str(space_file(tmp_path)), "--data", str(data), "--results", str(tmp_path / "r")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error: cannot write the results in " in err and "Permission denied" in err
    assert "--resume" in err and "Traceback" not in err


def test_an_extended_budget_passes_the_resume_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data: Path,
) -> None:
    """More trials and no time limit are allowed: the search gets as far as starting Ray."""

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("x")

    monkeypatch.setattr(cluster, "init_ray", unreachable)
    space = space_file(tmp_path)
    started_experiment(tmp_path, space)
    more = space_file(tmp_path, budget__num_samples=5, budget__time_budget_s=None)
    args = [str(more), "--data", str(data), "--results", str(tmp_path / "results"), "--resume"]
    assert main(args) == 1
    assert "error: the search failed: OSError: x" in capsys.readouterr().err


def test_gpus_asked_of_a_cluster_without_gpus_is_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data: Path,
) -> None:
    monkeypatch.setattr(cluster, "init_ray", lambda *a, **k: {"CPU": 2.0})
    space = space_file(tmp_path, resources__gpus_per_worker=1)
    assert main([str(space), "--data", str(data), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: space 'tiny' asks for 1 GPU(s) per worker") and err.count("\n") == 1
    )


@pytest.mark.parametrize(
    ("setup", "flags", "message"),
    [
        (False, ["--resume"], "holds no experiment to resume"),
        (True, [], "exists; pass --resume to continue it or --overwrite"),
    ],
)
def test_resume_and_overwrite_mistakes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: bool,
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(cluster, "init_ray", no_ray)
    space = space_file(tmp_path)
    if setup:
        started_experiment(tmp_path, space)
    assert main([str(space), "--results", str(tmp_path / "results"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_space_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = space_file(tmp_path, budget__num_samples=0)
    assert main([str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: budget.num_samples") and "Traceback" not in err


def test_group_by_and_test_file_reach_the_search_and_bad_groups_stop_it_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import make_folder

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    data = make_folder(tmp_path / "d", n=6, size=(64, 64))
    (data / "metadata.csv").write_text(
        "filename,doi\n" + "".join(f"img{i:02d}.png,p{i // 2}\n" for i in range(6))
    )
    test = tmp_path / "test.txt"
    test.write_text("img04\n")  # its paper p2 also has img05, left in the search's data
    args = [str(space_file(tmp_path)), "--data", str(data), "--results", str(tmp_path / "r")]
    assert main([*args, "--group-by", "metadata.csv:doi", "--test-file", str(test)]) == 2
    err = capsys.readouterr().err
    assert "test.txt: test images share 1 group(s) (metadata.csv:doi)" in err and "p2" in err
    assert main([*args, "--group-by", "metadata.csv:nope"]) == 2
    assert "metadata.csv: has no column 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "tiny").exists()


def test_a_sampled_field_cannot_be_fixed_from_the_command_line(tmp_path: Path) -> None:
    space = load_space(space_file(tmp_path))
    assert space.with_fixed(group_by="regex:(\\d)").fixed["group_by"] == "regex:(\\d)"
    with pytest.raises(ValueError, match="parameters.lr: sampled by the space"):
        space.with_fixed(lr=0.1)


def test_the_leaderboard_ranks_as_best_does_and_shows_the_score_it_ranks_by() -> None:
    """With val_shifts trials rank by val_score (best/ and `final` go by it): the printed
    leaderboard ranks by it too and shows it; without, by the IoU, as before."""
    import pandas as pd

    from emseg_search.cli.run import leaderboard

    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "status": ["completed"] * 3,
            "best_val_iou": [0.95, 0.90, 0.85],
            "best_val_dice": [0.97, 0.95, 0.92],
            "best_val_score": [0.80, 0.88, 0.70],
            "epochs_run": [2, 2, 2],
            "train_seconds": [1.0, 1.0, 1.0],
            "params_synthetic_mix": [0.75, 1.0, 0.75],
        }
    )
    lines = leaderboard(trials, 10).splitlines()
    assert lines[0].split()[:4] == ["trial_id", "status", "best_val_score", "best_val_iou"]
    assert [line.split()[0] for line in lines[1:]] == ["b", "a", "c"]
    assert "synthetic_mix" in lines[0]
    plain = leaderboard(trials.assign(best_val_score=trials["best_val_iou"]), 10).splitlines()
    assert "best_val_score" not in plain[0]
    assert [line.split()[0] for line in plain[1:]] == ["a", "b", "c"]
