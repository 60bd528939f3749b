"""The worker loop without Ray (LocalSession): resume, divergence, best-epoch bookkeeping,
progress lines; and the Session protocol every place a run can train in implements."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emseg_search.config import TrialConfig
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.results.schemas import OBJECTIVES
from emseg_search.train import worker
from emseg_search.train.checkpoint import latest_checkpoint, load_checkpoint, read_best
from emseg_search.train.data import PreparedData, prepare_data
from emseg_search.train.session import LocalSession, Session, TrainSession
from emseg_search.train.worker import build_run, log_to_stdout, run_worker, train_run

# differ from run to run
TIMING = ("epoch_seconds", "val_seconds", "train_images_per_s", "val_ms_per_megapixel")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 images: 3 train, 2 validation, 1 held-out test image
    return ensure_synthetic_data(tmp_path_factory.mktemp("data") / "synth", n=6, size=64)


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cfg(data: Path, **fields: Any) -> TrialConfig:
    base = dict(
        data=str(data),
        arch="unet",
        encoder="resnet18",
        tile_size=64,
        tiles_per_image=4,  # 12 tiles: 3 steps of 4 per epoch
        batch_size=4,
        epochs=3,
        warmup_epochs=0,
        lr=3e-3,
        augment="flips",
        val_fraction=0.34,
    )
    return TrialConfig(**{**base, **fields})


def _loop_config(cfg: TrialConfig) -> dict[str, Any]:
    prepared, _, fingerprint = prepare_data(cfg)
    return {
        "trial": cfg.to_dict(),
        "prepared": prepared.to_dict(),
        "threads": 1,
        "fingerprint": fingerprint.model_dump(mode="json"),  # as the drivers pass it
    }


class Killed(Exception):
    """Stands in for Tune stopping the trial (or the machine dying) at a report."""


class StoppingSession(LocalSession):
    """A LocalSession whose process is 'killed' right after reporting epoch ``after``."""

    def __init__(self, folder: Path, after: int) -> None:
        super().__init__(folder)
        self.after = after

    def report(self, metrics: dict[str, Any], save: Any = None) -> None:
        super().report(metrics, save)
        if metrics["epoch"] == self.after:
            raise Killed


class KeepingSession(LocalSession):
    """A LocalSession that also keeps every epoch's checkpoint under ``folder``/all/<epoch>."""

    def report(self, metrics: dict[str, Any], save: Any = None) -> None:
        if save is not None:
            keep = self.folder / "all" / str(metrics["epoch"])
            keep.mkdir(parents=True)
            save(keep)
        super().report(metrics, save)


def _untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_resume_in_the_middle_continues_and_ends_as_an_uninterrupted_run(
    synth: Path, tmp_path: Path
) -> None:
    config = _loop_config(_cfg(synth))
    whole = LocalSession(tmp_path / "whole")
    run_worker(config, whole)
    assert [r["epoch"] for r in whole.reports] == [0, 1, 2]

    with pytest.raises(Killed):
        run_worker(config, StoppingSession(tmp_path / "resumed", after=0))
    again = LocalSession(tmp_path / "resumed")
    run_worker(config, again)
    assert [r["epoch"] for r in again.reports] == [1, 2]  # continues at epoch 1, once

    done = load_checkpoint(latest_checkpoint(again.folder))
    ref = load_checkpoint(latest_checkpoint(whole.folder))
    assert [row["epoch"] for row in done.history] == [0, 1, 2]
    assert _untimed(done.history) == _untimed(ref.history)
    # CPU training is deterministic: resuming reproduces the weights bit for bit
    for key, value in ref.state["model"].items():
        assert torch.equal(done.state["model"][key], value), key
    for key, value in ref.best.items():
        assert torch.equal(done.best[key], value), key
    assert done.state["optimizer"]["state"].keys() == ref.state["optimizer"]["state"].keys()
    assert done.state["scheduler"]["last_epoch"] == ref.state["scheduler"]["last_epoch"] == 9


def test_resume_after_the_last_epoch_reports_it_again_without_training(
    synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _loop_config(_cfg(synth, epochs=1))
    first = LocalSession(tmp_path / "run")
    run_worker(config, first)
    checkpoint = latest_checkpoint(first.folder)
    written = sorted((p.name, p.stat().st_mtime_ns) for p in checkpoint.iterdir())

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emseg_search"):
        again = LocalSession(tmp_path / "run")
        run_worker(config, again)
    assert again.reports == [first.reports[-1]]
    assert not [r for r in caplog.messages if r.startswith("[emseg] epoch")]  # no training
    assert latest_checkpoint(again.folder) == checkpoint  # and no new checkpoint
    assert sorted((p.name, p.stat().st_mtime_ns) for p in checkpoint.iterdir()) == written


def test_a_nan_loss_reports_divergence_and_stops(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth)
    session = LocalSession(tmp_path / "run")
    run = build_run(cfg, prepare_data(cfg)[0], session)
    steps, calls = len(run.loader), []

    def nan_in_epoch_1(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = run.loss_fn(logits, mask)
        return loss * float("nan") if len(calls) > steps + 1 else loss  # epoch 1, step 1

    train_run(dataclasses.replace(run, loss_fn=nan_in_epoch_1), session)
    assert [r["epoch"] for r in session.reports] == [0, 1]
    assert len(calls) == steps + 2  # stopped at the bad step: no further batches
    first, diverged = session.reports
    assert first["diverged"] is False
    # every objective a multi-objective search reads is there (Tune checks), NaN if never reached
    unscored = {m: diverged.pop(m) for m in OBJECTIVES if m not in ("val_iou", "val_score")}
    assert all(math.isnan(v) for v in unscored.values()), unscored
    assert diverged == {
        "epoch": 1,
        "diverged": True,
        "stop_reason": diverged["stop_reason"],
        "val_iou": 0.0,
        "val_score": 0.0,
        "best_val_iou": first["best_val_iou"],
        "best_val_score": first["best_val_score"],
    }
    assert diverged["stop_reason"].startswith("loss became nan at step 1 of the epoch (lr ")
    assert "on rank" not in diverged["stop_reason"]  # one process: no rank to name
    # the diverged epoch leaves no checkpoint: a resume starts again after epoch 0
    assert load_checkpoint(latest_checkpoint(session.folder)).state["epoch"] == 0


@pytest.mark.parametrize(
    ("fields", "ious", "best_epochs", "best_ious"),
    [
        ({}, [0.3, 0.6, 0.5], [0, 1, 1], [0.3, 0.6, 0.6]),
        ({}, [0.3, 0.3, 0.4], [0, 0, 2], [0.3, 0.3, 0.4]),  # a tie keeps the earlier epoch
        ({"val_every": 2}, [0.6, 0.5], [-1, 1, 1], [-1.0, 0.6, 0.6]),  # epochs 1 and 2 (last)
        ({"val_fraction": 0.0}, [], [0, 1, 2], [None, None, None]),  # the last epoch wins
    ],
)
def test_best_epoch_follows_the_best_validation_iou(
    synth: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    ious: list[float],
    best_epochs: list[int],
    best_ious: list[float | None],
) -> None:
    scripted = iter(ious)

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        iou = next(scripted)
        return {"iou": iou, "dice": 2 * iou / (1 + iou), "precision": 0.5, "recall": 0.5}

    monkeypatch.setattr(worker, "evaluate", evaluate)
    session = KeepingSession(tmp_path / "run")
    run_worker(_loop_config(_cfg(synth, **fields)), session)
    assert next(scripted, None) is None  # validated exactly where expected
    assert [r["best_epoch"] for r in session.reports] == best_epochs
    assert [r["best_val_iou"] for r in session.reports] == best_ious
    validated = {"val_every": [-1, 1, 2], "val_fraction": [-1, -1, -1]}
    assert [r["val_epoch"] for r in session.reports] == validated.get(
        next(iter(fields), ""), [0, 1, 2]
    )
    # the best weights are those checkpointed at the best epoch
    best = read_best(latest_checkpoint(session.folder))
    at_best = load_checkpoint(session.folder / "all" / str(best_epochs[-1])).state["model"]
    assert best.keys() == at_best.keys()
    for key, value in at_best.items():
        assert torch.equal(best[key], value), key
    last = load_checkpoint(session.folder / "all" / "2").state["model"]
    differs = any(not torch.equal(best[k], last[k]) for k in last)
    assert differs == (best_epochs[-1] != 2)


def test_val_shifts_score_shifted_images_and_pick_the_best_epoch_by_val_score(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With val_shifts, each validation also scores the images under each shift; the epoch of
    highest (1 - w) val_iou + w val_robust_iou is the best, not the one of highest val_iou."""
    # per epoch: plain IoU, then one IoU per shift (2 shifts)
    scripted = iter([0.8, 0.2, 0.4, 0.7, 0.7, 0.7, 0.9, 0.1, 0.1])
    seen: list[int] = []

    def evaluate(model: Any, loader: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        seen.append(len(loader.dataset))
        iou = next(scripted)
        return {"iou": iou, "dice": 2 * iou / (1 + iou), "precision": 0.5, "recall": 0.5}

    monkeypatch.setattr(worker, "evaluate", evaluate)
    cfg = _cfg(synth, val_shifts=["scale_x0.5", "invert"], robust_weight=0.5)
    session = LocalSession(tmp_path / "run")
    run_worker(_loop_config(cfg), session)
    assert next(scripted, None) is None and seen == [2] * 9  # the same 2 images, 3 x per epoch
    robust = [r["val_robust_iou"] for r in session.reports]
    assert robust == pytest.approx([0.3, 0.7, 0.1])
    # each shift's own IoU, under its name, in the order of val_shifts
    shifts = [r["val_shift_iou"] for r in session.reports]
    assert [list(s) for s in shifts] == [["scale_x0.5", "invert"]] * 3
    assert [list(s.values()) for s in shifts] == [[0.2, 0.4], [0.7, 0.7], [0.1, 0.1]]
    assert [r["val_score"] for r in session.reports] == pytest.approx([0.55, 0.7, 0.5])
    assert [r["best_epoch"] for r in session.reports] == [0, 1, 1]  # not epoch 2 (IoU 0.9)
    assert session.reports[-1]["best_val_iou"] == pytest.approx(0.7)  # the best epoch's IoU
    assert session.reports[-1]["best_val_score"] == pytest.approx(0.7)


def test_shifted_validation_images_are_the_shifted_originals(synth: Path) -> None:
    from emseg_search.data import load_data
    from emseg_search.data.shifts import apply_shift
    from emseg_search.train.data import build_shifted_val

    cfg = _cfg(synth, val_shifts=["scale_x2"])
    prepared, data, _ = prepare_data(cfg)
    shifted = build_shifted_val(cfg, prepared, data)["scale_x2"]
    first = load_data(prepared.data_dir).subset(prepared.val)[0]
    image, inst = apply_shift("scale_x2", first.image, first.instances)
    assert shifted.items[0].image.shape == (2 * first.image.shape[0], 2 * first.image.shape[1])
    assert (shifted.items[0].image == image).all() and (shifted.items[0].instances == inst).all()


def test_a_synthetic_domain_in_val_shifts_scores_its_own_draws_not_the_benchmarks(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``synth:dense-small-carbon`` in val_shifts scores 16 images of the scene at every
    validation (beside the shifted validation images), drawn apart from the images the
    benchmark scores and from those the training mix adds, shared across ranks without
    overlap, and enters val_robust_iou like a shift."""
    import numpy as np

    from emseg_search.data.shifts import domain_items
    from emseg_search.data.synth.mix import synthetic_items
    from emseg_search.train.data import build_shifted_val

    name = "synth:dense-small-carbon"
    cfg = _cfg(synth, val_shifts=["invert", name])
    prepared, data, _ = prepare_data(cfg)
    domain = build_shifted_val(cfg, prepared, data)[name].items
    assert len(domain) == 16 and all(m.image.shape == (256, 256) for m in domain)
    benchmark = domain_items(name, 16)  # what `evaluate --shifts` scores
    mixed = synthetic_items(16, 256, ("dense-small-carbon",))  # what synthetic_mix trains on
    for m in domain:
        assert not any(np.array_equal(m.image, o.image) for o in (*benchmark, *mixed)), m.name
    halves = [build_shifted_val(cfg, prepared, data, rank=r, world=2)[name].items for r in (0, 1)]
    assert sorted(m.name for h in halves for m in h) == sorted(m.name for m in domain)
    # the same draws at every call: every epoch and trial scores the same images
    again = build_shifted_val(cfg, prepared, data)[name].items
    assert all(np.array_equal(a.image, b.image) for a, b in zip(domain, again, strict=True))

    seen: list[int] = []
    scripted = iter([0.8, 0.6, 0.2] * 3)  # per epoch: plain IoU, invert, the domain

    def evaluate(model: Any, loader: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        seen.append(len(loader.dataset))
        iou = next(scripted)
        return {"iou": iou, "dice": 2 * iou / (1 + iou), "precision": 0.5, "recall": 0.5}

    monkeypatch.setattr(worker, "evaluate", evaluate)
    session = LocalSession(tmp_path / "run")
    run_worker(_loop_config(cfg), session)
    assert seen == [2, 2, 16] * 3
    assert [r["val_robust_iou"] for r in session.reports] == pytest.approx([0.4] * 3)
    assert [r["val_score"] for r in session.reports] == pytest.approx([0.6] * 3)


def test_val_domain_inference_scores_a_domain_as_evaluate_scale_auto_does(
    synth: Path, tmp_path: Path
) -> None:
    """``val_domain_inference: auto+tta``: validation predicts the dense scene's draws as
    ``evaluate --scale auto --tta`` predicts them with the model's artifact (a working scale
    per image from the training particles' sizes, flips averaged): the same IoU to the last
    digit, while the shifts of the validation images stay at the model's scale."""
    from emseg_search.data.fingerprint import compute_fingerprint
    from emseg_search.data.shifts import VAL_DOMAIN_SEED, domain_items
    from emseg_search.inference.artifact import write_artifact
    from emseg_search.inference.predictor import Predictor
    from emseg_search.train.data import build_shifted_val

    name = "synth:dense-small-carbon"
    cfg = _cfg(synth, val_shifts=["invert", name], val_domain_inference="auto+tta", scale=0.5)
    prepared, data, fingerprint = prepare_data(cfg)
    assert set(build_shifted_val(cfg, prepared, data)) == {"invert"}  # the domain: below
    run = build_run(cfg, prepared, LocalSession(tmp_path / "run"))
    assert [len(run.domain_items[name])] == [16] and set(run.shift_loaders) == {"invert"}
    got = worker.domain_iou(run, run.bare_model, run.domain_items[name])

    state = run.bare_model.state_dict()
    art = tmp_path / "model"
    write_artifact(
        art, cfg, state, prepared.mean, prepared.std, prepared.normalization, fingerprint, 32, {}
    )
    predictor = Predictor.from_dir(art, scale="auto", tta=True)
    inter = union = 0
    for m in domain_items(name, 16, seed=VAL_DOMAIN_SEED):
        pred = predictor.predict_mask(m.image)
        inter += int((pred & m.mask).sum())
        union += int((pred | m.mask).sum())
    assert got == pytest.approx(inter / union, abs=1e-12)

    # a model that finds the scene's dark particles: auto runs them at another scale than the
    # model's, which scores otherwise than the model's scale would
    class Dark(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -8.0 * x

    items = run.domain_items[name]
    dark = dataclasses.replace(Predictor.from_dir(art).artifact, model=Dark())

    def pooled(predictor: Predictor) -> tuple[float, set[float]]:
        counts, scales = np.zeros(2), set()
        for m in items:
            pred = predictor.predict_mask(m.image)
            counts += [(pred & m.mask).sum(), (pred | m.mask).sum()]
            scales.add(predictor.last_scale)
        return counts[0] / counts[1], scales

    auto, scales = pooled(Predictor(dark, scale="auto", tta=True))
    fixed, _ = pooled(Predictor(dark, tta=True))
    assert worker.domain_iou(run, dark.model, items) == pytest.approx(auto, abs=1e-12)
    assert scales - {0.5} and abs(auto - fixed) > 0.01, (scales, auto, fixed)
    assert compute_fingerprint(data.subset(prepared.train)) == fingerprint
    # the drivers pass the fingerprint they computed ("fingerprint" in the loop config): the
    # worker takes it instead of reading the training images again
    given = fingerprint.model_copy(update={"n_particles": fingerprint.n_particles + 1})
    assert build_run(cfg, prepared, LocalSession(tmp_path / "g"), given).domain_fingerprint is given

    reports = LocalSession(tmp_path / "epochs")
    run_worker(_loop_config(cfg.model_copy(update={"epochs": 1})), reports)
    shift_iou = dict(reports.reports[-1]["val_shift_iou"])
    assert list(shift_iou) == ["invert", name]  # val_shifts' order, as the log prints them


def test_val_domain_inference_needs_a_domain_and_a_semantic_model(synth: Path) -> None:
    from emseg_search.config import ConfigError

    with pytest.raises(ConfigError, match="val_domain_inference 'auto'.*names none"):
        TrialConfig.from_dict({"val_shifts": ["invert"], "val_domain_inference": "auto"})
    with pytest.raises(ConfigError, match="arch 'maskrcnn' finds instances"):
        TrialConfig.from_dict(
            {
                "arch": "maskrcnn",
                "val_shifts": ["synth:dense-small-carbon"],
                "val_domain_inference": "auto+tta",
            }
        )
    with pytest.raises(ConfigError, match="val_domain_inference"):
        TrialConfig.from_dict({"val_domain_inference": "fixed"})


def test_unknown_val_shifts_are_refused_before_training(synth: Path, tmp_path: Path) -> None:
    from emseg_search.train.driver import run_training

    cfg = _cfg(synth, val_shifts=["scale_x3", "none", "synth:dense"])
    with pytest.raises(
        ValueError,
        match="val_shifts: unknown shift.*scale_x3, none, synth:dense; valid: .*"
        "invert, synth:tem, synth:stem, synth:sem, synth:dense-small-carbon$",
    ):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_progress_lines_are_logged_and_printed_only_when_asked(
    synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="emseg_search"):
        run_worker(_loop_config(_cfg(synth, epochs=1)), LocalSession(tmp_path / "run"))
    assert caplog.messages[0] == (
        "[emseg] unet/resnet18: world size 1 on cpu, 12 tiles x 1 epochs and "
        "2 validation images per worker"
    )
    assert caplog.messages[1].startswith("[emseg] epoch 1/1  loss ")
    assert " val IoU " in caplog.messages[1] and caplog.messages[1].endswith(" s")
    assert capsys.readouterr().out == ""  # library code never prints

    package = logging.getLogger("emseg_search")
    saved = package.handlers[:], package.level, package.propagate
    try:
        log_to_stdout()
        log_to_stdout()  # a reused process (a Tune actor) must not print lines twice
        logging.getLogger("emseg_search.train.worker").info("[emseg] hello")
        assert capsys.readouterr().out == "[emseg] hello\n"
    finally:
        package.handlers[:], package.level, package.propagate = saved


def test_every_session_implements_the_protocol(tmp_path: Path) -> None:
    from emseg_search.search.trainable import TuneSession

    assert isinstance(LocalSession(tmp_path), Session)
    members = ("prepare_loader", "prepare_model", "checkpoint_dir", "report")
    for cls in (TrainSession, TuneSession, LocalSession):
        for name in members:
            expected = inspect.signature(getattr(Session, name)).parameters
            got = inspect.signature(getattr(cls, name)).parameters
            assert list(got) == list(expected), (cls.__name__, name)
    with pytest.raises(ValueError, match="start a torch.distributed process group first"):
        LocalSession(tmp_path, rank=1, world=2)
    with pytest.raises(ValueError, match="`0 <= rank < world` must hold, got rank=2"):
        LocalSession(tmp_path, rank=2, world=2)


def test_prepared_data_crosses_as_a_plain_dict(synth: Path) -> None:
    prepared = prepare_data(_cfg(synth))[0]
    assert PreparedData.from_dict(prepared.to_dict()) == prepared


def test_channels_last_trains_the_same_model_and_its_weights_load_anywhere(
    synth: Path, tmp_path: Path
) -> None:
    """``channels_last`` (the default) changes the memory layout, not the model: the same
    weights give the same outputs and gradients (to float rounding), the first epoch from the
    same seed the same loss and validation IoU as a contiguous run (later epochs drift apart
    as any two runs whose sums round differently do), and the checkpoint loads into a plain
    contiguous model."""
    from emseg_search.models.registry import build_model

    torch.manual_seed(0)
    plain = build_model(_cfg(synth))
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 64, 64)
    outs = []
    for model in (plain, nhwc):
        out = model(x)
        out.square().mean().backward()
        outs.append((out.detach(), [p.grad for p in model.parameters()]))
    # float32 sums in another order: outputs of magnitude ~1 agree to ~1e-4
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=2e-4, rtol=1e-3)
    grads = [torch.cat([g.flatten() for g in o[1]]) for o in outs]
    assert (grads[1] - grads[0]).norm() < 1e-2 * grads[0].norm()  # measured: 0.2 %

    runs = {}
    for layout in (True, False):
        cfg = _cfg(synth, epochs=2, channels_last=layout)
        session = LocalSession(tmp_path / str(layout))
        run = build_run(cfg, prepare_data(cfg)[0], session)
        conv = next(
            m
            for m in run.bare_model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size != (1, 1)
        )
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == layout
        assert conv.weight.is_contiguous() != layout
        train_run(run, session)
        runs[layout] = session
    first = [runs[layout].reports[0] for layout in (True, False)]
    assert first[0]["train_loss"] == pytest.approx(first[1]["train_loss"], rel=1e-4)
    assert first[0]["val_iou"] == pytest.approx(first[1]["val_iou"], abs=5e-3)
    done = load_checkpoint(latest_checkpoint(runs[True].folder))
    fresh = build_model(_cfg(synth))
    fresh.load_state_dict(done.state["model"])
    assert all(p.is_contiguous() for p in fresh.parameters())
