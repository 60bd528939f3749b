"""Data parallel without Ray: two gloo processes (torch.multiprocessing.spawn), a LocalSession
each. A NaN on one rank stops every rank; sharded validation scores equal one process's."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from emseg_search.config import TrialConfig
from emseg_search.data import load_data
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.models.registry import build_model
from emseg_search.train.checkpoint import latest_checkpoint, load_checkpoint
from emseg_search.train.data import PreparedData, build_datasets, prepare_data
from emseg_search.train.loops import evaluate
from emseg_search.train.session import LocalSession
from emseg_search.train.worker import build_run, run_worker, train_run

COUNTED = ("iou", "dice", "precision", "recall")  # from summed integer counts: exact
AVERAGED = ("mean_image_iou", "mean_image_dice")  # float sums, added in another order
PARTICLES = (
    "particle_precision",
    "particle_recall",
    "particle_f1",
    "panoptic_quality",
    "count_error",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialConfig, PreparedData]:
    data = ensure_synthetic_data(tmp_path_factory.mktemp("data") / "synth", n=10, size=64)
    cfg = TrialConfig(
        data=str(data),
        arch="unet",
        encoder="resnet18",
        tile_size=64,
        tiles_per_image=4,
        batch_size=2,
        epochs=2,
        warmup_epochs=0,
        lr=3e-3,
        augment="flips",
        val_fraction=0.3,  # 5 training and 3 validation images
    )
    prepared = prepare_data(cfg)[0]
    assert len(prepared.val) % 2 == 1  # uneven shards over two ranks
    return cfg, prepared


def _init(rank: int, world: int, init_method: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)


def _diverging_rank(
    rank: int, world: int, init_method: str, config: dict[str, Any], folder: str, out: str
) -> None:
    """Train 2 epochs; rank 1's loss becomes NaN at step 1 of epoch 1."""
    _init(rank, world, init_method)
    try:
        cfg = TrialConfig.from_dict(config["trial"])
        session = LocalSession(folder, rank, world)
        run = build_run(cfg, PreparedData.from_dict(config["prepared"]), session)
        if rank == 1:
            steps, loss_fn, calls = len(run.loader), run.loss_fn, []

            def nan_in_epoch_1(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                calls.append(1)
                loss = loss_fn(logits, mask)
                return loss * float("nan") if len(calls) == steps + 2 else loss

            run = dataclasses.replace(run, loss_fn=nan_in_epoch_1)
        t0 = time.perf_counter()
        train_run(run, session)
        seconds = time.perf_counter() - t0
        # both ranks left the loop (under Ray Train, report() waits for every rank the same way)
        dist.barrier()
        result = {"reports": session.reports, "seconds": seconds}
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)  # the old loop hung here: rank 0 waited in backward for rank 1
@pytest.mark.parametrize("val_images", [3, 1])  # 1: rank 1 validates nothing (it hung too)
def test_a_nan_loss_on_one_rank_stops_every_rank(
    setup: tuple[TrialConfig, PreparedData], tmp_path: Path, val_images: int
) -> None:
    cfg, prepared = setup
    prepared = dataclasses.replace(prepared, val=prepared.val[:val_images])
    config = {"trial": cfg.to_dict(), "prepared": prepared.to_dict(), "threads": 1}
    init = f"file://{tmp_path / 'rendezvous'}"  # no port to race for
    folder = tmp_path / "run"
    mp.spawn(_diverging_rank, args=(2, init, config, str(folder), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for got in ranks:
        first, last = got["reports"]
        assert (first["epoch"], first["diverged"]) == (0, False)
        assert (last["epoch"], last["diverged"]) == (1, True)
        assert last["stop_reason"].startswith(
            "loss became nan at step 1 of the epoch on rank 1 of 2 (lr "
        )
        assert got["seconds"] < 60
    assert ranks[0]["reports"][1] == ranks[1]["reports"][1]

    # epoch 0 validated on two shards; every rank reports the whole set's scores, which are
    # those of the checkpointed (rank 0) weights scored in one process
    checkpoint = load_checkpoint(latest_checkpoint(folder))
    assert checkpoint.state["epoch"] == 0  # the diverged epoch saved nothing
    model = build_model(cfg)
    model.load_state_dict(checkpoint.state["model"])
    _, val = build_datasets(cfg, prepared, load_data(prepared.data_dir))
    one = evaluate(model, DataLoader(val, batch_size=1), torch.device("cpu"), cfg.threshold)
    for got in ranks:
        scores = got["reports"][0]
        for key in COUNTED:
            assert scores[f"val_{key}"] == one[key], key
        for key in AVERAGED:
            assert scores[f"val_{key}"] == pytest.approx(one[key], rel=1e-12), key


def _evaluating_rank(
    rank: int, world: int, init_method: str, config: dict[str, Any], weights: str, out: str
) -> None:
    """Score the same weights on this rank's shard: all validation images, then only one
    (rank 1's shard is then empty)."""
    _init(rank, world, init_method)
    try:
        cfg = TrialConfig.from_dict(config["trial"])
        prepared = PreparedData.from_dict(config["prepared"])
        model = build_model(cfg)
        model.load_state_dict(torch.load(weights, weights_only=True))
        data = load_data(prepared.data_dir)
        scores = {}
        for name, subset in (("all", prepared), ("one", _first_val(prepared))):
            _, val = build_datasets(cfg, subset, data, rank, world)
            loader = DataLoader(val, batch_size=1)
            scores[name] = {"images": len(val)}
            scores[name] |= evaluate(
                model, loader, torch.device("cpu"), cfg.threshold, particles=True
            )
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(scores), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def _first_val(prepared: PreparedData) -> PreparedData:
    return dataclasses.replace(prepared, val=prepared.val[:1])


@pytest.mark.timeout(120)
def test_two_rank_validation_equals_one_process(
    setup: tuple[TrialConfig, PreparedData], tmp_path: Path
) -> None:
    cfg, prepared = setup
    config = {"trial": cfg.to_dict(), "prepared": prepared.to_dict(), "threads": 1}
    # weights that predict something: one epoch of training, in this process
    trained = LocalSession(tmp_path / "run")
    run_worker({**config, "trial": cfg.model_copy(update={"epochs": 1}).to_dict()}, trained)
    weights = tmp_path / "weights.pt"
    torch.save(load_checkpoint(latest_checkpoint(trained.folder)).state["model"], weights)

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_evaluating_rank, args=(2, init, config, str(weights), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights, weights_only=True))
    data = load_data(prepared.data_dir)
    for name, subset in (("all", prepared), ("one", _first_val(prepared))):
        _, val = build_datasets(cfg, subset, data)
        loader = DataLoader(val, batch_size=1)
        one = evaluate(model, loader, torch.device("cpu"), cfg.threshold, particles=True)
        assert 0.0 < one["iou"] < 1.0 and 0.0 < one["precision"] < 1.0  # not a trivial score
        shards = [got[name]["images"] for got in ranks]
        assert sum(shards) == len(val) and shards[0] == shards[1] + 1
        for got in ranks:
            for key in COUNTED:
                assert got[name][key] == one[key], (name, key)
            for key in AVERAGED:
                assert got[name][key] == pytest.approx(one[key], rel=1e-12), (name, key)
            # particle counts are summed over ranks too: the whole set's particle scores
            for key in PARTICLES:
                assert got[name][key] == pytest.approx(one[key], rel=1e-12), (name, key)
