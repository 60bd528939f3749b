"""Where a training run reports to: a Ray Train worker, or a Tune trial's own process.

The worker loop (``train.worker.run_worker``) calls only these methods, so one loop serves
both: a data-parallel TorchTrainer worker (``TrainSession``) and a 1-worker trial that trains
inside its Tune trial process (``TuneSession``, no worker group to start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from emseg_search.storage import CHECKPOINT_PREFIX, Storage


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


class TuneSession:
    """Inside a Tune trial process, one worker: no DDP; checkpoints in the search's storage.

    Checkpoints go to ``storage``/``run``/checkpoint_epoch_<n> (the newest kept), beside where
    a TorchTrainer trial keeps its own, so resuming and writing the trial's model find them
    the same way, locally or in cloud storage.
    """

    rank, world = 0, 1

    def __init__(self, storage: Storage, run: str, use_gpu: bool) -> None:
        import ray.tune

        self._tune = ray.tune
        self.storage, self.run = storage, run
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        if use_gpu and self.device.type != "cuda":
            raise RuntimeError(
                f"the trial was given a GPU, but torch sees none "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
            )

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        """Nothing to shard: batches are moved to the device by the loop."""
        return loader

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """The model on the trial's device."""
        return model.to(self.device)

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[Path | None]:
        """The newest complete checkpoint of this run as a local folder, or None."""
        latest = self.storage.latest_checkpoint(self.run)
        if latest is None:
            yield None
        elif self.storage.is_local:
            yield Path(latest)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                yield self.storage.download(latest, tmp)

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Store the checkpoint (``save(folder)`` fills it), then report to Tune: it is in
        storage before Tune hears of the epoch, as with Ray Train."""
        if save is not None:
            staging = self.storage.staging_dir(self.run)
            try:
                save(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            name = f"{CHECKPOINT_PREFIX}epoch_{int(metrics['epoch']):06d}"
            self.storage.save_checkpoint(self.run, name, staging)
        self._tune.report(metrics)
