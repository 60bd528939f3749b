"""Where a training run reports to: a Ray Train worker, or a Tune trial's own process.

The worker loop (``train.worker.run_worker``) calls only these methods, so one loop serves
both: a data-parallel TorchTrainer worker (``TrainSession``) and a 1-worker trial that trains
inside its Tune trial process (``TuneSession``, no worker group to start).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

CHECKPOINT_PREFIX = "checkpoint_"


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

    def checkpoint_dir(self) -> Any:
        """A context manager giving the folder of the checkpoint to resume from, or None."""
        checkpoint = self._train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint else _NoCheckpoint()

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Report one epoch; ``save(folder)`` fills its checkpoint (rank 0 only)."""
        if save is None:
            self._train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(tmp))


class TuneSession:
    """Inside a Tune trial process, one worker: no DDP, checkpoints kept in ``run_dir``.

    Checkpoints are laid out as a TorchTrainer lays them out (``run_dir/checkpoint_*``, the
    newest kept), so resuming and writing the trial's model read them the same way.
    """

    rank, world = 0, 1

    def __init__(self, run_dir: str | Path, use_gpu: bool) -> None:
        import ray.tune

        self._tune = ray.tune
        self.run_dir = Path(run_dir)
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

    def checkpoint_dir(self) -> Any:
        """A context manager giving the newest checkpoint folder in ``run_dir``, or None."""
        from emseg_search.train.driver import latest_checkpoint

        return _NoCheckpoint(latest_checkpoint(self.run_dir))

    def report(self, metrics: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        """Write the checkpoint (``save(folder)``, renamed into place, older ones deleted),
        then report to Tune: it is on disk before Tune hears of the epoch, as with Ray Train.
        """
        if save is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            name = f"{CHECKPOINT_PREFIX}epoch_{int(metrics['epoch']):06d}"
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.run_dir))
            try:
                save(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            target = self.run_dir / name
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
            for old in self.run_dir.glob(f"{CHECKPOINT_PREFIX}*"):
                if old != target and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        self._tune.report(metrics)


class _NoCheckpoint:
    """``with`` helper yielding a fixed folder (or None)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder

    def __enter__(self) -> Path | None:
        return self.folder

    def __exit__(self, *exc: object) -> None:
        return None
