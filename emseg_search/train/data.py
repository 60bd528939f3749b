"""From a TrialConfig to data: resolve the folder, validate, split, fingerprint, normalise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emseg_search.config import TrialConfig
from emseg_search.data import (
    EMData,
    Fingerprint,
    Micrograph,
    compute_fingerprint,
    load_data,
    resolve_split,
)
from emseg_search.data.datasets import TileDataset, WholeImageDataset, scaled_size
from emseg_search.data.synth.default_set import ensure_synthetic_data


@dataclass(frozen=True)
class PreparedData:
    """What the driver resolved once and every worker reuses (plain data, crosses Ray)."""

    data_dir: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    split_source: str
    mean: float
    std: float
    normalization: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for Ray."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreparedData:
        """Inverse of ``to_dict``."""
        return cls(**{**values, "train": tuple(values["train"]), "val": tuple(values["val"])})


def resolve_data_dir(cfg: TrialConfig) -> Path:
    """The data folder of a config; 'synthetic' is generated on first use."""
    return ensure_synthetic_data() if cfg.is_synthetic else Path(cfg.data).expanduser().absolute()


def prepare_data(cfg: TrialConfig) -> tuple[PreparedData, EMData, Fingerprint]:
    """Validate the data (DataError lists every problem), split it, fingerprint the train part.

    Normalisation follows pretrained encoder weights when there are any (their ImageNet
    statistics), else the training images' fingerprint.
    """
    root = resolve_data_dir(cfg)
    data = load_data(root)
    split = resolve_split(
        data.index, cfg.val_fraction, cfg.split_seed, cfg.val_file, cfg.group_by, cfg.test_file
    )
    fingerprint = compute_fingerprint(data.subset(split.train))
    mean, std, source = normalization(cfg, fingerprint)
    prepared = PreparedData(
        data_dir=str(root),
        train=split.train,
        val=split.val,
        split_source=split.source,
        mean=mean,
        std=std,
        normalization=source,
    )
    return prepared, data, fingerprint


def normalization(cfg: TrialConfig, fingerprint: Fingerprint) -> tuple[float, float, str]:
    """(mean, std, where they come from) for ``cfg``: the init_from artifact's (fine-tuning
    keeps the normalisation its weights learned), its encoder weights' statistics, or the
    training images' ``fingerprint`` for random init."""
    from emseg_search.models.registry import weights_normalization
    from emseg_search.train.init_from import init_normalization

    start = init_normalization(cfg)
    if start is not None:
        return *start, f"init_from ({cfg.init_from})"
    pretrained = weights_normalization(cfg)
    if pretrained is not None:
        return *pretrained, f"encoder weights ({cfg.encoder_weights})"
    mean, std = fingerprint.intensity_mean, max(fingerprint.intensity_std, 1e-3)
    return mean, std, "training-data fingerprint"


def mixed_synthetic(cfg: TrialConfig, n_real: int) -> tuple[Micrograph, ...]:
    """The synthetic images ``cfg.synthetic_mix`` adds to ``n_real`` real training images,
    each one training tile large after the model's rescale: drawn at tile_size / scale
    (``synthetic_size: model``), or drawn at tile_size and resized by 1 / scale (``native``:
    nearest neighbour, which the rescale undoes exactly for scale 1/2, 1/3, ...), so the model
    sees the generator's particles at their own size in px."""
    from emseg_search.data.synth.mix import draw_size, mix_count, synthetic_items

    n = mix_count(cfg.synthetic_mix, n_real)
    drawn = synthetic_items(n, draw_size(cfg), cfg.synthetic_kinds)
    if cfg.synthetic_size == "model" or cfg.scale == 1.0:
        return drawn
    return tuple(
        Micrograph(m.name, *_resize_nearest(m.image, m.instances, 1.0 / cfg.scale)) for m in drawn
    )


def _resize_nearest(
    image: np.ndarray, instances: np.ndarray, factor: float
) -> tuple[np.ndarray, ...]:
    """``image`` and ``instances`` resized by ``factor``, nearest neighbour both."""
    import cv2

    h, w = scaled_size(image.shape, factor)
    return tuple(cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST) for a in (image, instances))


def build_datasets(
    cfg: TrialConfig, prepared: PreparedData, data: EMData, rank: int = 0, world: int = 1
) -> tuple[TileDataset, WholeImageDataset]:
    """Training tiles (all training images, plus ``synthetic_mix`` synthetic ones per real one;
    a DistributedSampler shards them) and this rank's disjoint share of the validation images
    (so no image is scored twice)."""
    from emseg_search.augment import build_augment

    train_items = data.subset(prepared.train)
    if cfg.synthetic_mix > 0 and not cfg.is_synthetic:
        train_items = (*train_items, *mixed_synthetic(cfg, len(train_items)))
    train = TileDataset(
        train_items,
        tile_size=cfg.tile_size,
        mean=prepared.mean,
        std=prepared.std,
        samples_per_epoch=len(train_items) * cfg.tiles_per_image,
        scale=cfg.scale,
        transform=build_augment(cfg.augment, cfg.augment_strength),
        seed=cfg.seed + 1000 * rank,
        target=cfg.target,
        boundary_width=cfg.boundary_width,
    )
    return train, whole_images(cfg, prepared, data.subset(prepared.val)[rank::world])


def whole_images(
    cfg: TrialConfig, prepared: PreparedData, items: Sequence[Micrograph]
) -> WholeImageDataset:
    """Micrographs as validation scores them: whole, at the model's scale, normalised, padded
    to a valid input."""
    from emseg_search.models.registry import min_input_size, required_stride

    return WholeImageDataset(
        items,
        mean=prepared.mean,
        std=prepared.std,
        stride=required_stride(cfg),
        scale=cfg.scale,
        min_size=min_input_size(cfg),
    )


def build_shifted_val(
    cfg: TrialConfig, prepared: PreparedData, data: EMData, rank: int = 0, world: int = 1
) -> dict[str, WholeImageDataset]:
    """Per name in ``cfg.val_shifts``: this rank's share of the validation images under that
    shift, or of a synthetic domain's own images (``synth:...``: VAL_DOMAIN_IMAGES drawn as
    the benchmark draws them, with VAL_DOMAIN_SEED instead of its seed). data/shifts.py; fixed
    seeds, so every epoch and trial scores the same images, at the model's scale. Without the
    domains ``build_val_domains`` takes (``val_domain_inference`` other than ``model``)."""
    from emseg_search.data.shifts import (
        DOMAINS,
        VAL_DOMAIN_IMAGES,
        VAL_DOMAIN_SEED,
        check_val_shifts,
        domain_items,
        shifted_items,
    )

    check_val_shifts(cfg.val_shifts)
    mine = data.subset(prepared.val)[rank::world]
    # domains that validation predicts as `evaluate --scale auto` does: build_val_domains
    predicted = set(DOMAINS) if cfg.val_domain_inference != "model" else set()

    def items(name: str) -> list[Micrograph]:
        if name in DOMAINS:
            return domain_items(name, VAL_DOMAIN_IMAGES, seed=VAL_DOMAIN_SEED)[rank::world]
        return list(shifted_items(name, mine))

    return {
        name: whole_images(cfg, prepared, items(name))
        for name in cfg.val_shifts
        if name not in predicted
    }


def build_val_domains(
    cfg: TrialConfig, rank: int = 0, world: int = 1
) -> dict[str, list[Micrograph]]:
    """With ``cfg.val_domain_inference`` other than ``model``: per synthetic domain of
    ``cfg.val_shifts``, this rank's share of its VAL_DOMAIN_IMAGES draws (as
    ``build_shifted_val`` draws them), which validation predicts as ``evaluate --scale auto``
    does (worker.domain_iou) instead of at the model's scale; else nothing."""
    from emseg_search.data.shifts import DOMAINS, VAL_DOMAIN_IMAGES, VAL_DOMAIN_SEED, domain_items

    if cfg.val_domain_inference == "model":
        return {}
    return {
        name: domain_items(name, VAL_DOMAIN_IMAGES, seed=VAL_DOMAIN_SEED)[rank::world]
        for name in cfg.val_shifts
        if name in DOMAINS
    }
