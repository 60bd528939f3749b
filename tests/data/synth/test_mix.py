"""Synthetic images mixed into real training data (TrialConfig.synthetic_mix)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_folder

from emseg_search.config import TrialConfig
from emseg_search.data.datasets import to_canonical
from emseg_search.data.synth.mix import KINDS, SEED, mix_count, synthetic_items
from emseg_search.train.data import build_datasets, prepare_data


def test_mix_count_rounds_ratio_times_real_images() -> None:
    assert mix_count(0.0, 284) == 0
    assert mix_count(0.5, 284) == 142
    assert mix_count(1.0, 3) == 3
    with pytest.raises(ValueError, match="synthetic_mix must be >= 0"):
        mix_count(-0.1, 10)


def test_synthetic_items_cycle_kinds_are_labelled_and_repeatable() -> None:
    items = synthetic_items(len(KINDS) * 2, 96)
    assert len(items) == 8
    assert len({m.name for m in items}) == 8
    for m in items:
        assert m.image.shape == m.instances.shape == (96, 96)
        assert m.instances.max() > 0  # every image has particles to learn
    synthetic_items.cache_clear()
    again = synthetic_items(len(KINDS) * 2, 96)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(items, again, strict=True))


def test_synthetic_kinds_weight_the_cycle_and_keep_each_images_seed() -> None:
    from emseg_search.config import SYNTHETIC_KINDS
    from emseg_search.data.synth.generator import generate_sample

    assert tuple(KINDS) == SYNTHETIC_KINDS  # every kind the config accepts can be drawn

    cycle = ("tem", "dense-small-carbon", "dense-small-carbon")
    items = synthetic_items(6, 96, cycle)
    for i, m in enumerate(items):  # image i: kind cycle[i % 3], seeded (SEED, i) as by default
        style, scene = KINDS[cycle[i % 3]]
        s = generate_sample([SEED, i], 96, style=style, scene=scene)
        assert np.array_equal(m.image, s.image)
    default = synthetic_items(6, 96)
    assert np.array_equal(items[0].image, default[0].image)  # both tem, seed (SEED, 0)
    assert not np.array_equal(items[1].image, default[1].image)  # dense scene, not stem
    with pytest.raises(ValueError, match="unknown synthetic kind.*'tem2'.*valid: a list of tem"):
        synthetic_items(4, 96, ("tem2",))


def test_mixed_training_images_follow_synthetic_kinds(tmp_path) -> None:
    root = make_folder(tmp_path / "d", n=4, size=(64, 64))
    cfg = TrialConfig(
        data=str(root), val_fraction=0.25, tile_size=64, scale=1.0, synthetic_mix=2.0,
        synthetic_kinds=["dense-small-carbon"],
    )  # fmt: skip
    prepared, data, _ = prepare_data(cfg)
    train, _ = build_datasets(cfg, prepared, data)
    dense = synthetic_items(6, 64, ("dense-small-carbon",))
    mixed = train.images[len(prepared.train) :]
    assert len(mixed) == 6
    assert all(np.array_equal(a, to_canonical(b.image)) for a, b in zip(mixed, dense, strict=True))


def test_build_datasets_adds_mixed_images_to_training_only(tmp_path) -> None:
    root = make_folder(tmp_path / "d", n=6, size=(64, 64))
    base = dict(data=str(root), val_fraction=0.33, tile_size=64, tiles_per_image=2, scale=1.0)
    cfg = TrialConfig(**base)
    prepared, data, _ = prepare_data(cfg)
    train, val = build_datasets(cfg, prepared, data)
    mixed_cfg = TrialConfig(**base, synthetic_mix=1.5)
    mixed_train, mixed_val = build_datasets(mixed_cfg, prepared, data)
    n_real = len(prepared.train)
    assert len(train.images) == n_real
    assert len(mixed_train.images) == n_real + round(1.5 * n_real)
    assert len(mixed_train) == 2 * len(mixed_train.images)  # tiles_per_image per image
    assert len(mixed_val) == len(val)  # validation stays real
    # a synthetic image is drawn at one tile at the model's scale: 64 / 1.0
    assert mixed_train.images[-1].shape == (64, 64)


def test_synthetic_mix_is_validated() -> None:
    from emseg_search.config import ConfigError

    with pytest.raises(ConfigError, match="synthetic_mix"):
        TrialConfig.from_dict({"synthetic_mix": -1})
    with pytest.raises(ConfigError, match="synthetic_kinds: .*unknown synthetic kind.*'dense'"):
        TrialConfig.from_dict({"synthetic_kinds": ["tem", "dense"]})


def test_native_size_synthetic_images_reach_the_model_at_the_generators_size(tmp_path) -> None:
    """`synthetic_size: native` at scale 0.5: drawn one tile large, enlarged twice, and the
    model's rescale gives back exactly the drawn image; `model` draws twice as large instead."""
    root = make_folder(tmp_path / "d", n=4, size=(128, 128))
    base = dict(
        data=str(root), val_fraction=0.25, tile_size=64, scale=0.5, synthetic_mix=1.0,
        synthetic_kinds=["dense-small-carbon"],
    )  # fmt: skip
    native = TrialConfig(**base, synthetic_size="native")
    prepared, data, _ = prepare_data(native)
    train, _ = build_datasets(native, prepared, data)
    drawn = synthetic_items(3, 64, ("dense-small-carbon",))
    mixed = train.images[len(prepared.train) :]
    assert len(mixed) == 3
    for got, m in zip(mixed, drawn, strict=True):
        assert np.array_equal(got, to_canonical(m.image))
    masks = train.masks[len(prepared.train) :]
    assert all((k > 0).any() for k in masks)  # particles survive the round trip
    model_size, _ = build_datasets(TrialConfig(**base), prepared, data)
    assert [a.shape for a in model_size.images[len(prepared.train) :]] == [(64, 64)] * 3
    assert not np.array_equal(model_size.images[-1], mixed[-1])  # drawn at 128, halved


def test_input_particle_size_is_the_mix_particles_median_at_the_models_input() -> None:
    """What `--scale auto` brings small particles to for a model trained on a synthetic mix:
    the mix's particles at the model's input, at the generator's own size for
    synthetic_size: native, shrunk with the images by `scale` for model."""
    from emseg_search.data.fingerprint import area_weighted_diameters
    from emseg_search.data.synth.mix import SIZE_SAMPLE, input_particle_size

    assert input_particle_size(TrialConfig(data="somewhere")) is None  # no mix
    assert input_particle_size(TrialConfig(synthetic_mix=1.0)) is None  # the embedded data
    kinds = ["dense-small-carbon"]
    native = TrialConfig(
        data="somewhere",
        synthetic_mix=1.0,
        synthetic_kinds=kinds,
        synthetic_size="native",
        tile_size=128,
        scale=0.5,
    )
    drawn = synthetic_items(SIZE_SAMPLE, 128, tuple(kinds))  # the images training draws
    areas = np.concatenate([np.bincount(m.instances.ravel())[1:] for m in drawn])
    median = area_weighted_diameters(areas[areas > 0], [50])[0]
    assert input_particle_size(native) == pytest.approx(median)
    assert 3 < median < 16  # small particles (the scene draws them in proportion to the image)
    # drawn 256 px large and shrunk by 0.5 with the real images: about the same size
    model = native.model_copy(update={"synthetic_size": "model"})
    assert input_particle_size(model) == pytest.approx(median, rel=0.25)
    shrunk = model.model_copy(update={"scale": 0.25})  # drawn 512 px, shrunk 4x
    assert input_particle_size(shrunk) == pytest.approx(median, rel=0.25)
    synthetic_items.cache_clear()
