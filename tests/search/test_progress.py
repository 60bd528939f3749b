"""ConsoleProgress: one line per trial event, with the best score, elapsed and time left."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from emseg_search.search.progress import ConsoleProgress, format_params, format_seconds
from emseg_search.space.spec import space_from_dict

SPACE = space_from_dict(
    {
        "name": "t",
        "budget": {"num_samples": 3},
        "scheduler": {"type": "asha", "max_epochs": 2},
        "fixed": {"tile_size": 64},
        "parameters": {
            "arch": {"type": "categorical", "choices": ["unet", "deeplabv3plus"]},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        },
    }
)


def trial(trial_id: str, **last: object) -> SimpleNamespace:
    config = {"arch": "unet", "lr": 0.00123456}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last, error_file=None)


def epoch(e: int, iou: float, best: float) -> dict:
    return {"epoch": e, "val_epoch": e, "val_iou": iou, "best_val_iou": best, "epoch_seconds": 3}


def test_one_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress(SPACE)
    progress.setup(total_num_samples=3)
    a, b = trial("a"), trial("b")
    trials = [a]
    progress.on_trial_start(0, trials, a)
    progress.on_trial_result(0, trials, a, epoch(0, 0.5, 0.5))
    progress.on_trial_result(0, trials, a, epoch(1, 0.4, 0.5))
    a.last_result = epoch(1, 0.4, 0.5)
    progress.on_trial_complete(0, trials, a)
    trials.append(b)
    progress.on_trial_start(0, trials, b)
    progress.on_trial_result(0, trials, b, epoch(0, 0.7, 0.7))
    b.last_result = epoch(0, 0.7, 0.7)
    progress.on_trial_complete(0, trials, b)
    c = trial("c")
    trials.append(c)
    progress.on_trial_start(0, trials, c)
    progress.on_trial_error(0, trials, c)
    progress.on_experiment_end(trials)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10, lines
    assert "trial 1/3 started: arch=unet lr=0.00123" in lines[0]
    assert "trial 1/3 epoch 1/2: val IoU 0.5000 (trial best 0.5000) in 3.0 s" in lines[1]
    assert "best val IoU 0.5000 (trial 1)" in lines[1] and "elapsed" in lines[1]
    assert "left at most" in lines[1]  # the estimate, once an epoch has run
    assert "trial 1/3 completed, best val IoU 0.5000" in lines[3]
    assert "trial 2/3 epoch 1/2: val IoU 0.7000" in lines[5]
    assert "best val IoU 0.7000 (trial 2)" in lines[5]
    assert "trial 2/3 pruned after 1/2 epochs" in lines[6]
    assert "trial 3/3 error: trial failed" in lines[8]
    assert "search ended: 3 trial(s)" in lines[9]


def test_a_diverged_trial_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress(SPACE)
    d = trial("d")
    progress.on_trial_start(0, [d], d)
    result = {"epoch": 0, "diverged": True, "stop_reason": "loss became nan", "val_iou": 0.0}
    progress.on_trial_result(0, [d], d, result)
    d.last_result = result
    progress.on_trial_complete(0, [d], d)
    out = capsys.readouterr().out
    assert "epoch 1/2: diverged (loss became nan)" in out
    assert "trial 1/3 error: diverged (loss became nan)" in out


def test_a_resumed_trial_continues_its_count(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress(SPACE)
    r = trial("r", epoch=0, val_iou=0.3)
    progress.on_trial_start(0, [r], r)
    assert "trial 1/3 resumed after epoch 1: arch=unet" in capsys.readouterr().out


def test_a_resumed_search_numbers_trials_as_it_did_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A --resume may list the restored trials in another order: each keeps its number
    (Tune's experiment tag), in its lines and in the best so far."""
    progress = ConsoleProgress(SPACE)
    first, third = trial("f", epoch=14, val_iou=0.8), trial("t", epoch=3, val_iou=0.9)
    first.experiment_tag, third.experiment_tag = "1_arch=unet", "3_arch=unet"
    trials = [third, first]  # the unfinished one first
    progress.on_trial_start(0, trials, third)
    progress.on_trial_result(0, trials, third, epoch(4, 0.9, 0.9))
    out = capsys.readouterr().out
    assert "trial 3/3 resumed after epoch 4" in out and "trial 3/3 epoch 5" in out
    assert "(trial 3)" in out


def test_time_left_is_an_upper_bound_from_the_epochs_left() -> None:
    progress = ConsoleProgress(SPACE)
    progress.setup(total_num_samples=3)
    a = trial("a")
    assert progress.time_left([a], 10.0) is None  # no epoch yet: nothing to go by
    progress.epochs, progress.epochs_run = {"a": 1}, 1
    # 1 epoch in 10 s; left: 1 of a's + 2 trials x 2 epochs
    assert progress.time_left([a], 10.0) == pytest.approx(50.0)
    progress.time_budget = 30
    assert progress.time_left([a], 10.0) == pytest.approx(20.0)  # the budget ends it sooner


def test_formats() -> None:
    assert [format_seconds(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]
    assert format_params({"arch": "unet", "lr": 0.000123456, "n": 3}) == (
        "arch=unet lr=0.000123 n=3"
    )


def test_resuming_a_finished_search_cuts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """--resume of a search whose trials all ended: Tune restores them finished, this process
    starts none, and the end line must not call them 'stopped by the end of the search'."""
    progress = ConsoleProgress(SPACE)
    progress.setup(total_num_samples=2)
    progress.on_experiment_end([trial("a"), trial("b")])
    out = capsys.readouterr().out
    assert "search ended: 2 trial(s)" in out and "stopped by the end" not in out
    running = trial("c")
    progress.on_trial_start(0, [running], running)
    progress.on_experiment_end([trial("a"), running])
    assert "1 stopped by the end of the search" in capsys.readouterr().out


def test_a_resumed_search_counts_the_trials_that_ended_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--resume: the trials that ended before the interruption are restored finished and never
    start again; their best score is the best so far, and they have no epochs left."""
    progress = ConsoleProgress(SPACE)
    progress.setup(total_num_samples=3)
    done = trial("a", **epoch(1, 0.8, 0.9))
    done.status = "TERMINATED"
    r = trial("b", epoch=0, val_iou=0.3)
    r.status = "RUNNING"
    trials = [done, r]
    progress.on_trial_start(0, trials, r)
    progress.on_trial_result(0, trials, r, epoch(1, 0.6, 0.6))
    line = capsys.readouterr().out.splitlines()[-1]
    assert "best val IoU 0.9000 (trial 1)" in line
    # 1 epoch run in the elapsed time; left: none of a's, none of b's, 2 of the third trial's
    assert progress.time_left(trials, 10.0) == pytest.approx(20.0)


def test_the_trial_best_of_a_metric_the_worker_keeps_no_best_of(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A particle objective: the worker reports no best_val_particle_f1, the console keeps it."""
    space = space_from_dict(
        {
            "name": "p",
            "metric": "val_particle_f1",
            "budget": {"num_samples": 1},
            "scheduler": {"type": "asha", "max_epochs": 3},
            "fixed": {"tile_size": 64},
            "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
        }
    )
    progress = ConsoleProgress(space)
    t = trial("t")
    t.config = {"lr": 0.001}
    progress.on_trial_start(0, [t], t)
    for e, f1 in enumerate((0.5, 0.8, 0.6)):
        progress.on_trial_result(0, [t], t, {"epoch": e, "val_epoch": e, "val_particle_f1": f1})
    t.last_result = {"epoch": 2, "val_epoch": 2, "val_particle_f1": 0.6}
    progress.on_trial_complete(0, [t], t)
    lines = capsys.readouterr().out.splitlines()
    assert "val particle F1 0.6000 (trial best 0.8000)" in lines[3]
    assert "completed, best val particle F1 0.8000" in lines[4]
