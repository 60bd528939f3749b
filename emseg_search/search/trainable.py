"""The Tune trainable: one training run of a sampled configuration per trial.

A 1-worker trial trains in its own Tune trial process (``TuneSession``); more workers train
data-parallel in a TorchTrainer that the trial starts and waits on. Either way checkpoints land
in ``<storage>/trials/<trial_id>/`` and every epoch is reported to Tune.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from emseg_search.config import TrialConfig
from emseg_search.data import Fingerprint
from emseg_search.search.storage import Storage
from emseg_search.space.spec import SearchSpace
from emseg_search.train.checkpoint import checkpoint_name
from emseg_search.train.data import PreparedData, normalization, prepare_data

TRIALS_DIR = "trials"
SPLIT_FIELDS = (
    "val_fraction",
    "val_file",
    "split_seed",
    "group_by",
    "test_file",
)  # what the split depends on


@dataclass(frozen=True)
class SearchContext:
    """What every trial needs besides its sampled parameters (passed with tune.with_parameters),
    with the data run_search validated, split and fingerprinted once for the whole search."""

    space: SearchSpace
    storage: Storage  # checkpoints: <storage>/trials/<trial_id>/
    data: str  # the resolved data folder
    use_gpu: bool
    threads: int
    prepared: PreparedData  # the search's split, normalised for its probe configuration
    fingerprint: Fingerprint  # of the split's training images

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The TrialConfig of a trial's sampled (Tune/Optuna) parameters."""
        return self.space.trial_config(params, data=self.data)

    def trial_data(self, cfg: TrialConfig) -> tuple[PreparedData, Fingerprint]:
        """What ``prepare_data(cfg)`` returns, without reading the data again: the split and
        its fingerprint are the search's unless the space samples a split field (then this
        trial's are resolved); only the normalisation may follow ``cfg`` (encoder weights)."""
        if set(SPLIT_FIELDS) & set(self.space.parameters):
            prepared, _, fingerprint = prepare_data(cfg)
            return prepared, fingerprint
        mean, std, source = normalization(cfg, self.fingerprint)
        return replace(self.prepared, mean=mean, std=std, normalization=source), self.fingerprint


def run_trial(params: dict[str, Any], context: SearchContext) -> None:
    """Tune trainable: one training run of the sampled configuration.

    A 1-worker trial trains right here (``Resources.inline``); more workers train
    data-parallel in a TorchTrainer that this function starts and waits on. Either way the
    checkpoints land in ``<storage>/trials/<trial_id>/`` and every epoch is reported to Tune.
    """
    import ray.tune

    space = context.space
    cfg = context.trial_config(params)
    trial_id = ray.tune.get_context().get_trial_id()
    prepared, fingerprint = context.trial_data(cfg)
    storage = context.storage
    loop_config = {
        "trial": cfg.to_dict(),
        "prepared": prepared.to_dict(),
        "threads": context.threads,
        "fingerprint": fingerprint.model_dump(mode="json"),
    }
    # The result files (epochs, model) are written by the Tune driver when the trial ends
    # (recorder.TableRecorder): ASHA may stop this function at any report, the last included.
    if space.resources.inline:
        from emseg_search.train.worker import run_worker

        run_worker(loop_config, TuneSession(storage, f"{TRIALS_DIR}/{trial_id}", context.use_gpu))
        return

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from emseg_search.train.worker import train_loop_per_worker

    res = space.resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=context.use_gpu,
            resources_per_worker={
                "CPU": res.cpus_per_worker,
                **({"GPU": res.gpus_per_worker} if context.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable: a restored trial finds its own checkpoints
            storage_path=storage.path(TRIALS_DIR),
            storage_filesystem=None if storage.is_local else storage.fs,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # retries happen at the Tune level; a retried trial resumes from this run's checkpoint
            failure_config=ray.train.FailureConfig(max_failures=0),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()


class TuneSession:
    """Inside a Tune trial process, one worker: no DDP; checkpoints in the search's storage.

    Checkpoints go to ``storage``/``run``/checkpoint_epoch_<n> (the newest kept), beside where
    a TorchTrainer trial keeps its own, so resuming and writing the trial's model find them
    the same way, locally or in cloud storage. A ``train.session.Session``; made once per
    trial, in the trial's process, so it also sends the worker's progress lines to stdout.
    """

    rank, world = 0, 1

    def __init__(self, storage: Storage, run: str, use_gpu: bool) -> None:
        import ray.tune

        from emseg_search.train.worker import log_to_stdout

        log_to_stdout()
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
            self.storage.save_checkpoint(self.run, checkpoint_name(metrics["epoch"]), staging)
        self._tune.report(metrics)
