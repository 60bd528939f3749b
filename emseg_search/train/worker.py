"""The Ray Train worker loop: one data-parallel training run, checkpointed by rank 0."""

from __future__ import annotations

import copy
import functools
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from emseg_search.config import TrialConfig
from emseg_search.data import load_data
from emseg_search.data.datasets import seed_worker
from emseg_search.models.precision import autocast_dtype
from emseg_search.train.checkpoint import load_checkpoint, save_checkpoint
from emseg_search.train.data import PreparedData, build_datasets
from emseg_search.train.loops import (
    DivergedError,
    build_optimizer,
    build_scheduler,
    evaluate,
    train_one_epoch,
)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper."""
    return getattr(model, "module", model)


def _save_into(
    state: dict[str, Any],
    best: dict[str, torch.Tensor],
    history: list[dict[str, Any]],
    folder: Path,
) -> None:
    save_checkpoint(folder, state, best, history)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: {"trial": TrialConfig dict, "prepared":
    PreparedData dict, "threads": torch threads per worker}."""
    from emseg_search.train.session import TrainSession

    run_worker(config, TrainSession())


def run_worker(config: dict[str, Any], session: Any) -> None:
    """One training run, reporting every epoch to ``session`` (train.session: a Ray Train
    worker, or a Tune trial's own process). ``config`` as for train_loop_per_worker."""
    cfg = TrialConfig.from_dict(config["trial"])
    prepared = PreparedData.from_dict(config["prepared"])
    torch.set_num_threads(int(config.get("threads", 1)))
    rank, world, device = session.rank, session.world, session.device
    torch.manual_seed(cfg.seed + rank)

    from emseg_search.losses import build_loss
    from emseg_search.models.registry import build_model, unused_parameters

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
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False)  # disjoint shard per rank

    model = build_model(cfg)
    # some encoders/depths leave parameters without gradients, which DDP must be told about
    unused = bool(unused_parameters(model, cfg)) if world > 1 else False
    model = session.prepare_model(model, find_unused_parameters=unused)
    loss_fn = build_loss(cfg.loss, cfg.loss_weight)
    optimizer = build_optimizer(model, cfg)
    steps = len(loader)
    if steps == 0:
        raise ValueError(
            f"batch_size={cfg.batch_size} exceeds the {len(train_ds)} training tiles "
            f"per epoch on each of {world} workers; lower batch_size"
        )
    scheduler = build_scheduler(optimizer, cfg, steps)
    amp_dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    validating = bool(prepared.val)  # no validation split: the last epoch is the model
    if rank == 0:
        print(
            f"[emseg] {cfg.arch}/{cfg.encoder}: world size {world} on {device.type}, "
            f"{len(train_ds)} tiles x {cfg.epochs} epochs and "
            + (
                f"{len(val_ds)} validation images per worker"
                if validating
                else "no validation split (all images train; the last epoch is the model)"
            ),
            flush=True,
        )

    start, best_iou, best_epoch, history = 0, -1.0, -1, []
    best_state: dict[str, torch.Tensor] = {}
    val: dict[str, float] = {}
    state: dict[str, Any] | None = None
    with session.checkpoint_dir() as folder:
        if folder is not None:
            loaded = load_checkpoint(folder, device)
            state, best_state, history = loaded.state, loaded.best, loaded.history
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, best_iou, best_epoch = state["epoch"] + 1, state["best_iou"], state["best_epoch"]
        val = state.get("val", {})

    if start >= cfg.epochs and history:
        # resumed after its last epoch (a search killed between the two): report the final
        # metrics again so the caller gets a result; no training, no new checkpoint
        session.report(history[-1])
        return
    for epoch in range(start, cfg.epochs):
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        try:
            stats = train_one_epoch(
                model,
                loader,
                loss_fn,
                optimizer,
                scheduler,
                device,
                amp_dtype,
                scaler,
                cfg.grad_clip,
            )
        except DivergedError as exc:
            session.report(
                {
                    "epoch": epoch,
                    "diverged": True,
                    "stop_reason": str(exc),
                    "val_iou": 0.0,
                    "best_val_iou": max(best_iou, 0.0),
                }
            )
            return
        last = epoch == cfg.epochs - 1
        val_seconds = 0.0
        if validating and ((epoch + 1) % cfg.val_every == 0 or last):
            t0 = time.perf_counter()
            val = evaluate(model, val_loader, device, cfg.threshold, amp_dtype)
            val_seconds = time.perf_counter() - t0
            val["epoch"] = epoch
        if not validating or (val and val["epoch"] == epoch and val["iou"] > best_iou):
            best_iou, best_epoch = (val["iou"] if validating else best_iou), epoch
            if rank == 0:
                best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
                )
        metrics = {
            "epoch": epoch,
            "train_loss": stats.train_loss,
            "lr": stats.lr,
            "epoch_seconds": stats.seconds,
            "val_seconds": val_seconds,
            "train_images_per_s": stats.images * world / stats.seconds,
            "val_epoch": val.get("epoch", -1),
            **{f"val_{k}": v for k, v in val.items() if k != "epoch"},
            "best_val_iou": best_iou if validating else None,
            "best_epoch": best_epoch,
            "diverged": False,
        }
        history.append(metrics)
        if rank == 0:
            shown = (
                f"val IoU {val['iou']:.4f} Dice {val['dice']:.4f} (best {best_iou:.4f})"
                if val
                else ("not validated yet" if validating else "no validation")
            )
            print(
                f"[emseg] epoch {epoch + 1}/{cfg.epochs}  loss {stats.train_loss:.4f}  {shown}"
                f"  {stats.seconds:.1f} s",
                flush=True,
            )
            state = {
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,
                "best_iou": best_iou,
                "best_epoch": best_epoch,
                "val": val,
                "config": cfg.to_dict(),
            }
            session.report(metrics, save=functools.partial(_save_into, state, best_state, history))
        else:
            session.report(metrics)
