"""Where a training run reports to: a Ray Train worker (``TrainSession``); the Tune trial
process's session is search/trainable.py's ``TuneSession``.

The worker loop (``train.worker.run_worker``) calls only these methods, so one loop serves
both: a data-parallel TorchTrainer worker and a 1-worker trial that trains inside its Tune
trial process (no worker group to start).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader


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
