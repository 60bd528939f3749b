"""The worker loop: one (data-parallel) training run, reported epoch by epoch to a Session.

``run_worker`` builds what this rank trains with (``build_run``), then ``train_run`` restores
from the session's checkpoint (``restore``) and trains the remaining epochs
(``train_epochs``), each ending in ``report_epoch``: the metrics to the session on every rank,
the checkpoint from rank 0.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from emseg_search.config import INSTANCE_ARCHS, TrialConfig
from emseg_search.data import load_data
from emseg_search.data.datasets import TileDataset, seed_worker
from emseg_search.models.precision import autocast_dtype
from emseg_search.particles.postprocess import PostProcess
from emseg_search.results.schemas import OBJECTIVES
from emseg_search.train.checkpoint import load_checkpoint, save_checkpoint
from emseg_search.train.data import (
    PreparedData,
    build_datasets,
    build_shifted_val,
    build_val_domains,
)
from emseg_search.train.loops import (
    DivergedError,
    EpochStats,
    build_optimizer,
    build_scheduler,
    evaluate,
    train_one_epoch,
)
from emseg_search.train.session import Session

logger = logging.getLogger(__name__)

_STDOUT_HANDLER = "emseg-stdout"  # the name of the handler log_to_stdout adds (once)


def log_to_stdout(level: int = logging.INFO) -> None:
    """Print the package's log records (the "[emseg] ..." progress lines) as plain lines on
    stdout. For process boundaries only (a Ray Train worker, a Tune trial); idempotent."""
    package = logging.getLogger("emseg_search")
    if not any(h.get_name() == _STDOUT_HANDLER for h in package.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(_STDOUT_HANDLER)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False  # a root handler (Ray's, a user's) would print each line twice


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: {"trial": TrialConfig dict, "prepared":
    PreparedData dict, "threads": torch threads per worker, and optionally "fingerprint":
    the training images' Fingerprint dict, which the driver computed already}."""
    from emseg_search.train.session import TrainSession

    log_to_stdout()
    quiet_ray_reports()
    run_worker(config, TrainSession())


def quiet_ray_reports() -> None:
    """Silence Ray Train's "Reporting training result ..." line (one metrics dict per epoch):
    Ray Train v2 logs it at INFO through a logger named by its file path, which the
    ``LoggingConfig(log_level="WARNING")`` of the drivers does not reach."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to silence, or not this way
        return
    context.logger.setLevel(logging.WARNING)


def run_worker(config: dict[str, Any], session: Session) -> None:
    """One training run, reporting every epoch to ``session`` (a Ray Train worker, a Tune
    trial's own process or a LocalSession). ``config`` as for train_loop_per_worker."""
    cfg = TrialConfig.from_dict(config["trial"])
    prepared = PreparedData.from_dict(config["prepared"])
    torch.set_num_threads(int(config.get("threads", 1)))
    fingerprint = config.get("fingerprint")
    if fingerprint is not None:
        from emseg_search.data.fingerprint import Fingerprint

        fingerprint = Fingerprint.model_validate(fingerprint)
    train_run(build_run(cfg, prepared, session, fingerprint), session)


@dataclass(frozen=True)
class TrainingRun:
    """What one rank trains with, built once from the config by ``build_run``."""

    cfg: TrialConfig
    rank: int
    world: int
    device: torch.device
    model: nn.Module  # on ``device``; DDP-wrapped when world > 1
    train_data: TileDataset  # this rank's tiles (the loader's sampler shards them)
    loader: DataLoader
    val_loader: DataLoader  # this rank's disjoint share of the validation images
    shift_loaders: dict[str, DataLoader]  # the same images under each of cfg.val_shifts
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    validating: bool  # False: no validation split, the last epoch is the model
    # cfg.val_domain_inference other than "model": this rank's share of each synthetic domain
    # of cfg.val_shifts, predicted as `evaluate --scale auto` does, and what a Predictor needs
    # of an artifact for it (the training images' fingerprint: their particle sizes)
    domain_items: dict[str, list[Any]] = field(default_factory=dict)
    domain_meta: dict[str, Any] = field(default_factory=dict)
    domain_fingerprint: Any = None

    @property
    def bare_model(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return getattr(self.model, "module", self.model)


@dataclass
class Progress:
    """Where a run stands; what a checkpoint saves and ``restore`` brings back."""

    start: int = 0  # the next epoch to train
    best_score: float = -1.0  # val_score of the best epoch (val_iou without val_shifts)
    best_iou: float = -1.0  # val_iou of the best epoch
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # kept by rank 0
    val: dict[str, Any] = field(default_factory=dict)  # the latest validation, with "epoch"


def build_run(
    cfg: TrialConfig, prepared: PreparedData, session: Session, fingerprint: Any = None
) -> TrainingRun:
    """Data, model, loss, optimiser, schedule and scaler for this rank of ``session``;
    ``fingerprint``: the training images' (data.fingerprint.Fingerprint) when the driver has
    it, else computed here if val_domain_inference needs it."""
    from emseg_search.losses import build_trial_loss
    from emseg_search.models.registry import build_model, unused_parameters
    from emseg_search.train.init_from import apply_init_from, model_config

    rank, world, device = session.rank, session.world, session.device
    torch.manual_seed(cfg.seed + rank)
    data = load_data(prepared.data_dir)
    train_ds, val_ds = build_datasets(cfg, prepared, data, rank, world)
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.loader_workers,
        worker_init_fn=seed_worker,
        persistent_workers=cfg.loader_workers > 0,
        pin_memory=device.type == "cuda",
    )
    loader = session.prepare_loader(loader)
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False)
    shifted = build_shifted_val(cfg, prepared, data, rank, world) if prepared.val else {}
    shift_loaders = {n: DataLoader(d, batch_size=1, shuffle=False) for n, d in shifted.items()}
    domains = build_val_domains(cfg, rank, world) if prepared.val else {}
    domain_fingerprint = None
    if domains:  # the fingerprint the run's artifact gets: --scale auto's particle sizes
        from emseg_search.data.fingerprint import compute_fingerprint

        domain_fingerprint = fingerprint or compute_fingerprint(data.subset(prepared.train))

    model = build_model(model_config(cfg))
    apply_init_from(model, cfg)  # fine-tuning; a resumed run then loads its own checkpoint
    if cfg.channels_last and cfg.arch not in INSTANCE_ARCHS:
        # NHWC weights: the convolutions (depthwise ones above all) then run NHWC on CPU
        # (oneDNN) and GPU; state dicts load into either layout, so artifacts do not change
        model = model.to(memory_format=torch.channels_last)
    # some encoders/depths leave parameters without gradients, which DDP must be told about
    unused = bool(unused_parameters(model, cfg)) if world > 1 else False
    model = session.prepare_model(model, find_unused_parameters=unused)
    optimizer = build_optimizer(model, cfg)
    steps = len(loader)
    if steps == 0:
        raise ValueError(
            f"batch_size={cfg.batch_size} exceeds the {len(train_ds)} training tiles "
            f"per epoch on each of {world} workers; lower batch_size"
        )
    amp_dtype = autocast_dtype(device, cfg.amp)
    return TrainingRun(
        cfg=cfg,
        rank=rank,
        world=world,
        device=device,
        model=model,
        train_data=train_ds,
        loader=loader,
        val_loader=val_loader,
        shift_loaders=shift_loaders,
        loss_fn=build_trial_loss(cfg),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps),
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        amp_dtype=amp_dtype,
        validating=bool(prepared.val),
        domain_items=domains,
        domain_meta={
            "normalization": {"mean": prepared.mean, "std": prepared.std},
            "threshold": cfg.threshold,
            "postprocess": PostProcess.of(cfg).to_dict(),
        },
        domain_fingerprint=domain_fingerprint,
    )


def train_run(run: TrainingRun, session: Session) -> None:
    """Resume from the session's checkpoint, if any, and train the remaining epochs."""
    if run.rank == 0:
        _log_start(run)
    progress = restore(run, session)
    if progress.start >= run.cfg.epochs and progress.history:
        # resumed after its last epoch (a search killed between the two): report the final
        # metrics again so the caller gets a result; no training, no new checkpoint
        session.report(progress.history[-1])
        return
    train_epochs(run, progress, session)


def hardware(run: TrainingRun) -> dict[str, Any]:
    """Where the run trains: device type, GPU name, process-group backend, world size and the
    autocast dtype. It goes into every checkpoint and, from there, into the model artifact."""
    device = run.device
    return {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else "",
        "world": run.world,
        "amp": str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype else "off",
    }


def _log_start(run: TrainingRun) -> None:
    cfg = run.cfg
    hw = hardware(run)
    amp = f"mixed precision {hw['amp']}" if hw["amp"] != "off" else ""
    where = ", ".join(x for x in (hw["gpu"], hw["backend"], amp) if x)
    logger.info(
        f"[emseg] {cfg.arch}/{cfg.encoder}: world size {run.world} on {run.device.type}"
        f"{f' ({where})' if where else ''}, "
        f"{len(run.train_data)} tiles x {cfg.epochs} epochs and "
        + (
            f"{len(run.val_loader.dataset)} validation images per worker"
            if run.validating
            else "no validation split (all images train; the last epoch is the model)"
        )
    )


def restore(run: TrainingRun, session: Session) -> Progress:
    """Load the session's checkpoint into the run's model, optimiser, schedule and scaler;
    a fresh Progress when there is none."""
    with session.checkpoint_dir() as folder:
        if folder is None:
            return Progress()
        loaded = load_checkpoint(folder, run.device)
    state = loaded.state
    run.bare_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    return Progress(
        start=state["epoch"] + 1,
        best_score=state.get("best_score", state["best_iou"]),  # older checkpoints: IoU only
        best_iou=state["best_iou"],
        best_epoch=state["best_epoch"],
        history=loaded.history,
        best_state=loaded.best,
        val=state.get("val", {}),
    )


def seed_epoch(run: TrainingRun, epoch: int) -> None:
    """Seed torch and the tile augmentations from (seed, rank, epoch), so a resumed run draws
    the batches an uninterrupted one would (exactly so with loader_workers=0: persistent
    loader processes keep the stream they started with)."""
    entropy = [run.cfg.seed % 2**63, run.rank, epoch]
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    torch.manual_seed(seed)
    run.train_data.reseed(seed)
    sampler = getattr(run.loader, "sampler", None)
    if run.world > 1 and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _synced_model(run: TrainingRun) -> nn.Module:
    """The bare model with rank 0's buffers (BatchNorm statistics) on every rank: what rank 0
    checkpoints, scored on each rank's shard. Not the DDP wrapper, whose first forward in
    eval mode broadcasts them itself and so hangs when a rank's shard is empty."""
    model = run.bare_model
    if run.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    return model


def train_epochs(run: TrainingRun, progress: Progress, session: Session) -> None:
    """Train epochs ``progress.start`` .. cfg.epochs - 1, validating every ``val_every`` and at
    the last; a diverged epoch is reported (``diverged``, ``stop_reason``) and ends the run."""
    cfg = run.cfg
    for epoch in range(progress.start, cfg.epochs):
        seed_epoch(run, epoch)
        try:
            stats = train_one_epoch(
                run.model,
                run.loader,
                run.loss_fn,
                run.optimizer,
                run.scheduler,
                run.device,
                run.amp_dtype,
                run.scaler,
                cfg.grad_clip,
            )
        except DivergedError as exc:
            # every rank gets here at the same step (loops.agree_finite), so all report
            session.report(
                {
                    "epoch": epoch,
                    "diverged": True,
                    "stop_reason": str(exc),
                    # every objective a searcher may read is in the report (Tune refuses a
                    # result without them); the scores it never reached are NaN
                    **dict.fromkeys(OBJECTIVES, math.nan),
                    "val_iou": 0.0,
                    "val_score": 0.0,
                    "best_val_iou": max(progress.best_iou, 0.0),
                    "best_val_score": max(progress.best_score, 0.0),
                }
            )
            return
        val_seconds = 0.0
        if run.validating and ((epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1):
            t0 = time.perf_counter()
            progress.val = validate(run)
            val_seconds = time.perf_counter() - t0
            progress.val["epoch"] = epoch
        val = progress.val
        if not run.validating or (
            val and val["epoch"] == epoch and val["score"] > progress.best_score
        ):
            # without validation every epoch is the best so far: the last one is the model
            if run.validating:
                progress.best_score, progress.best_iou = val["score"], val["iou"]
            progress.best_epoch = epoch
            if run.rank == 0:
                progress.best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in run.bare_model.state_dict().items()}
                )
        report_epoch(run, progress, epoch, stats, val_seconds, session)


def validate(run: TrainingRun) -> dict[str, Any]:
    """Score the validation images (``loops.evaluate``: pixels, and particles through the
    post-processing of cfg's target, as ``evaluate`` does), and under each of
    cfg.val_shifts (pixels only): ``shift_iou`` maps each shift to its IoU, ``robust_iou``
    is their mean, ``score`` the selection metric ((1 - w) iou + w robust_iou with
    w = cfg.robust_weight; iou without shifts)."""
    model, cfg = _synced_model(run), run.cfg
    post = PostProcess.of(cfg)
    val = evaluate(
        model, run.val_loader, run.device, cfg.threshold, run.amp_dtype, post, particles=True
    )
    val["score"] = val["iou"]
    if run.shift_loaders or run.domain_items:
        ious = {
            name: domain_iou(run, model, run.domain_items[name])
            if name in run.domain_items
            else evaluate(
                model, run.shift_loaders[name], run.device, cfg.threshold, run.amp_dtype, post
            )["iou"]
            for name in cfg.val_shifts
        }
        val["shift_iou"] = ious
        val["robust_iou"] = float(np.mean(list(ious.values())))
        val["score"] = (1 - cfg.robust_weight) * val["iou"] + cfg.robust_weight * val["robust_iou"]
    return val


def domain_iou(run: TrainingRun, model: nn.Module, items: list[Any]) -> float:
    """IoU of a synthetic domain's draws (this rank's share) predicted as `evaluate --scale
    auto` (``--tta`` with ``auto+tta``) predicts them: a Predictor over the model in memory
    and the training images' particle sizes; counts summed over ranks."""
    from pathlib import Path

    from emseg_search.inference.artifact import ModelArtifact
    from emseg_search.inference.predictor import AUTO, Predictor
    from emseg_search.metrics import per_image_counts, summarize_distributed

    artifact = ModelArtifact(
        path=Path("<the model in training>"),
        model=model,
        config=run.cfg,
        meta=run.domain_meta,
        fingerprint=run.domain_fingerprint,
    )
    tta = run.cfg.val_domain_inference == "auto+tta"
    predictor = Predictor(artifact, scale=AUTO, tta=tta, device=run.device)
    rows = [
        per_image_counts(
            torch.from_numpy(predictor.predict_mask(m.image)), torch.from_numpy(m.mask)
        )
        for m in items
    ]
    counts = torch.cat(rows) if rows else torch.zeros((0, 4), dtype=torch.int64)
    return summarize_distributed(counts.sum(0), counts)["iou"]


def _shifts_shown(shift_iou: dict[str, float]) -> str:
    """'scale_x0.5 0.812, synth:dense-small-carbon 0.570' of a validation's val_shifts."""
    return ", ".join(f"{name} {iou:.3f}" for name, iou in shift_iou.items())


def _particles_shown(val: dict[str, Any]) -> str:
    """' particles F1 0.610 (P 0.700 R 0.540) PQ 0.490 count error 12.0 %' of a validation."""
    if "particle_f1" not in val:
        return ""
    return (
        f" particles F1 {val['particle_f1']:.3f} (P {val['particle_precision']:.3f} "
        f"R {val['particle_recall']:.3f}) PQ {val['panoptic_quality']:.3f} "
        f"count error {100 * val['count_error']:.1f} %"
    )


def report_epoch(
    run: TrainingRun,
    progress: Progress,
    epoch: int,
    stats: EpochStats,
    val_seconds: float,
    session: Session,
) -> dict[str, Any]:
    """Add the epoch's metrics to the history and report them; rank 0 also logs the epoch and
    attaches the checkpoint. Returns the metrics."""
    cfg, val = run.cfg, progress.val
    metrics = {
        "epoch": epoch,
        "train_loss": stats.train_loss,
        "lr": stats.lr,
        "epoch_seconds": stats.seconds,
        "val_seconds": val_seconds,
        "train_images_per_s": stats.images * run.world / stats.seconds,
        "val_epoch": val.get("epoch", -1),
        **{f"val_{k}": v for k, v in val.items() if k != "epoch"},
        "best_val_iou": progress.best_iou if run.validating else None,
        "best_val_score": progress.best_score if run.validating else None,
        "best_epoch": progress.best_epoch,
        "diverged": False,
    }
    progress.history.append(metrics)
    progress.start = epoch + 1
    if run.rank != 0:
        session.report(metrics)
        return metrics
    robust = (
        f" robust IoU {val['robust_iou']:.4f} ({_shifts_shown(val['shift_iou'])})"
        if "robust_iou" in val
        else ""
    )
    best = f"best score {progress.best_score:.4f}" if robust else f"best {progress.best_iou:.4f}"
    shown = (
        f"val IoU {val['iou']:.4f} Dice {val['dice']:.4f}{robust}{_particles_shown(val)} ({best})"
        if val
        else ("not validated yet" if run.validating else "no validation")
    )
    logger.info(
        f"[emseg] epoch {epoch + 1}/{cfg.epochs}  loss {stats.train_loss:.4f}  {shown}"
        f"  {stats.seconds:.1f} s"
    )
    state = {
        "model": run.bare_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,
        "best_iou": progress.best_iou,
        "best_score": progress.best_score,
        "best_epoch": progress.best_epoch,
        "val": val,
        "config": cfg.to_dict(),
        "hardware": hardware(run),
    }
    save = functools.partial(
        save_checkpoint, state=state, best=progress.best_state, history=progress.history
    )
    session.report(metrics, save=save)
    return metrics
