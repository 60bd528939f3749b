"""Training targets from instance maps: known answers, the image edge, flip consistency, and
training tiles whose target moves with the image."""

from __future__ import annotations

import numpy as np
import pytest

from emseg_search.data.loading import Micrograph
from emseg_search.data.synth.generator import generate_sample
from emseg_search.data.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    derive_target,
    particle_distances,
)

TARGETS = ("binary", "boundary", "distance")


def _two_squares() -> np.ndarray:
    """Two touching 5x5 particles (ids 1 and 2, columns 1-5 and 6-10) in a 7x12 image."""
    lab = np.zeros((7, 12), np.uint16)
    lab[1:6, 1:6] = 1
    lab[1:6, 6:11] = 2
    return lab


def test_distances_count_to_the_nearest_pixel_outside_the_particle() -> None:
    d = particle_distances(_two_squares())
    # each square on its own: rim 1, next ring 2, centre 3; the contact is a rim of both
    ring = np.array([1, 2, 3, 2, 1], np.float32)
    np.testing.assert_array_equal(d[3, 1:6], ring)
    np.testing.assert_array_equal(d[3, 6:11], ring)
    assert d[0].max() == 0 and d[:, 0].max() == 0  # background


def test_boundary_target_known_answer() -> None:
    lab = _two_squares()
    one = derive_target(lab, "boundary", boundary_width=1)
    assert one.dtype == np.uint8 and one.shape == lab.shape
    for cols in (slice(1, 6), slice(6, 11)):
        square = one[1:6, cols]
        assert (square[1:4, 1:4] == INTERIOR).all()  # 3x3 interior per particle
        assert (square == BOUNDARY).sum() == 16  # its one-pixel rim, the contact included
    assert (one[lab == 0] == BACKGROUND).all()
    two = derive_target(lab, "boundary", boundary_width=2)
    assert (two == INTERIOR).sum() == 2  # only the centres stay interior
    np.testing.assert_array_equal(derive_target(lab, "binary"), (lab > 0).astype(np.uint8))


def test_particles_go_on_beyond_the_image_edge() -> None:
    lab = np.zeros((6, 8), np.uint16)
    lab[0:4, 2:7] = 1  # cut by the top edge
    target = derive_target(lab, "boundary", boundary_width=1)
    assert (target[0, 3:6] == INTERIOR).all()  # the top row is not a rim
    assert (target[3, 2:7] == BOUNDARY).all()  # the bottom row is


def test_distance_target_is_normalised_per_particle() -> None:
    lab = _two_squares()
    lab[lab == 2] = 0
    lab[2:5, 7:10] = 2  # a smaller 3x3 neighbour (no longer touching)
    target = derive_target(lab, "distance")
    assert target.shape == (7, 12, 2) and target.dtype == np.float32
    np.testing.assert_array_equal(target[..., 0], (lab > 0).astype(np.float32))
    dist = target[..., 1]
    assert dist[3, 3] == 1.0 and dist[3, 8] == 1.0  # each particle peaks at 1
    assert dist[3, 1] == pytest.approx(1 / 3) and dist[3, 7] == pytest.approx(1 / 2)
    assert dist[lab == 0].max() == 0.0


def test_target_checks_its_input() -> None:
    with pytest.raises(ValueError, match="unknown target"):
        derive_target(_two_squares(), "flow")
    with pytest.raises(ValueError, match="integer ids"):
        derive_target(_two_squares() > 0, "boundary")
    with pytest.raises(ValueError, match="boundary_width"):
        derive_target(_two_squares(), "boundary", boundary_width=0)


def _touching_instances() -> np.ndarray:
    """A generated micrograph's instance map with touching particles (ids exact)."""
    for seed in range(20):
        lab = generate_sample(seed, size=96).instances
        # touching: two different ids 4-adjacent somewhere
        a, b = lab[:, :-1], lab[:, 1:]
        if ((a != b) & (a > 0) & (b > 0)).any():
            return lab
    raise AssertionError("the generator made no touching particles in 20 images")


@pytest.mark.parametrize("target", TARGETS)
def test_target_of_a_flipped_map_is_the_flipped_target(target: str) -> None:
    lab = _touching_instances()
    derived = derive_target(lab, target, boundary_width=2)
    for move in (np.fliplr, np.flipud, np.rot90, lambda x: np.rot90(x, 3)):
        moved = derive_target(np.ascontiguousarray(move(lab)), target, boundary_width=2)
        np.testing.assert_array_equal(moved, move(derived))


@pytest.mark.parametrize("target", TARGETS)
def test_training_tiles_carry_the_target_of_their_moved_instances(target: str) -> None:
    from emseg_search.augment import build_augment
    from emseg_search.data.datasets import TileDataset

    lab = _touching_instances()
    assert lab.max() < 256
    # the "image" is the instance map itself, so each tile says which instances it shows
    item = Micrograph("m", lab.astype(np.uint8), lab)
    ds = TileDataset(
        [item],
        tile_size=lab.shape[0],  # the whole image: no crop edge inside particles
        mean=0.0,
        std=1.0,
        samples_per_epoch=8,
        transform=build_augment("flips"),
        target=target,
        boundary_width=2,
    )
    channels = {"binary": 1, "boundary": 1, "distance": 2}[target]
    moved = 0
    for i in range(len(ds)):
        tile = ds[i]
        ids = np.rint(tile["image"][0].numpy() * 255).astype(np.uint16)
        moved += not np.array_equal(ids, lab)
        expected = derive_target(ids, target, boundary_width=2)
        expected = expected[None] if expected.ndim == 2 else np.moveaxis(expected, -1, 0)
        assert tile["mask"].shape == (channels, *lab.shape)
        # the distance is held in steps of 1/255
        np.testing.assert_allclose(tile["mask"].numpy(), expected, rtol=0, atol=0.5 / 255 + 1e-7)
    assert moved  # the flips did move some tiles
