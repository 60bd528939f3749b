"""Where a training run reports to: the ``Session`` protocol and two of its implementations,
a Ray Train worker (``TrainSession``) and this process without Ray (``LocalSession``); the Tune
trial process's session is search/trainable.py's ``TuneSession``.

The worker loop (``train.worker.run_worker``) uses only the protocol's members, so one loop
serves a data-parallel TorchTrainer worker, a 1-worker trial that trains inside its Tune trial
process (no worker group to start) and a plain test.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from emseg_search.atomic import atomic_dir
from emseg_search.train.checkpoint import (
    CHECKPOINT_PREFIX,
    checkpoint_name,
    latest_checkpoint,
)


@runtime_checkable
class Session(Protocol):
    """What the worker loop needs from where it runs: its place in the data-parallel group,
    loader and model preparation, the checkpoint to resume from, and per-epoch reports.

    Under torch.distributed (``world`` > 1) the caller has initialised the process group;
    the loop's collectives (the per-step finite-loss agreement, validation counts) use it.
    """

    rank: int
    world: int
    device: torch.device

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        """The training loader this rank iterates (sharded over the ranks when world > 1)."""
        ...

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """The model on this rank's device (DDP-wrapped when world > 1)."""
        ...

    def checkpoint_dir(self) -> contextlib.AbstractContextManager[Path | None]:
        """A context giving the local folder of the checkpoint to resume from, or None."""
        ...

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Report one epoch; ``save(folder)`` fills its checkpoint (rank 0 only)."""
        ...


class TrainSession:
    """Inside a Ray Train worker: DDP wrapping, sharded loaders, Train checkpoints."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        self._torch = ray.train.torch
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        """Shard the loader over the workers and move batches to the device."""
        return self._torch.prepare_data_loader(loader)

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """Move the model to the device and wrap it in DDP (more than one worker)."""
        return self._torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters}
        )

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[Path | None]:
        """The folder of the checkpoint to resume from, or None."""
        checkpoint = self._train.get_checkpoint()
        if checkpoint is None:
            yield None
        else:
            with checkpoint.as_directory() as folder:
                yield Path(folder)

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Report one epoch; ``save(folder)`` fills its checkpoint (rank 0 only)."""
        if save is None:
            self._train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(tmp))


class LocalSession:
    """In this process, no Ray: checkpoints in the local folder ``folder`` (named by
    ``checkpoint.checkpoint_name``, the newest kept) and every reported epoch in ``reports``.

    With ``world`` > 1 each rank makes its own LocalSession over one shared ``folder`` inside
    a torch.distributed process group the caller started; the loader is then sharded with a
    DistributedSampler and the model wrapped in DDP, as Ray Train does.
    """

    def __init__(
        self,
        folder: str | Path,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"LocalSession: `0 <= rank < world` must hold, got {rank=}, {world=}")
        if world > 1:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    f"LocalSession(world={world}): start a torch.distributed process group first"
                )
            if (dist.get_rank(), dist.get_world_size()) != (rank, world):
                raise ValueError(
                    f"LocalSession(rank={rank}, world={world}) in a process group where this "
                    f"process is rank {dist.get_rank()} of {dist.get_world_size()}"
                )
        self.folder = Path(folder)
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        """The loader itself, or (world > 1) the same loader over this rank's shard."""
        if self.world == 1:
            return loader
        sampler = DistributedSampler(
            loader.dataset,
            num_replicas=self.world,
            rank=self.rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
        )
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            drop_last=loader.drop_last,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers,
        )

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """The model on the session's device, DDP-wrapped when world > 1."""
        model = model.to(self.device)
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused_parameters
        )

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[Path | None]:
        """The newest complete checkpoint under ``folder``, or None."""
        yield latest_checkpoint(self.folder)

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Store the checkpoint (``save(folder)`` fills it) before recording the epoch, so a
        run stopped at this report resumes after it; older checkpoints are deleted."""
        if save is not None:
            target = self.folder / checkpoint_name(metrics["epoch"])
            with atomic_dir(target) as staging:
                save(staging)
            for old in self.folder.glob(f"{CHECKPOINT_PREFIX}*"):
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        self.reports.append(dict(metrics))
