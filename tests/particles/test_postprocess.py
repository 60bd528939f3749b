"""From model outputs to particles, per target: known answers on touching particles whose ids
are exact, the particle logit of each target, and the checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emseg_search.config import TrialConfig
from emseg_search.data.targets import derive_target
from emseg_search.particles.labelling import label_particles
from emseg_search.particles.matching import match_instances
from emseg_search.particles.postprocess import (
    PostProcess,
    drop_relatively_small,
    seeded_watershed,
)


def _touching_disks() -> np.ndarray:
    """Three disks of radius 9, the first two overlapping a little (a narrow neck), the third
    apart; plus a 2x2 speck and a 3x3 particle too small for an interior."""
    yy, xx = np.mgrid[:64, :80]
    lab = np.zeros((64, 80), np.int32)
    for i, (r, c) in enumerate([(20, 18), (20, 35), (45, 60)], start=1):
        lab[((yy - r) ** 2 + (xx - c) ** 2 <= 81) & (lab == 0)] = i
    lab[50:53, 10:13] = 4
    lab[5:7, 70:72] = 5
    return lab


def _outputs(lab: np.ndarray, target: str) -> torch.Tensor:
    """Confident logits (C, H, W) that encode ``target`` of the instance map exactly."""
    t = derive_target(lab, target, boundary_width=2)
    if target == "binary":
        return torch.from_numpy(np.where(t > 0, 8.0, -8.0)[None]).float()
    if target == "boundary":
        one_hot = np.stack([t == k for k in range(3)]).astype(np.float32)
        return torch.from_numpy(one_hot * 16.0 - 8.0)
    p = np.clip(t[..., 1], 1e-4, 1 - 1e-4)
    return torch.from_numpy(
        np.stack([np.where(t[..., 0] > 0, 8.0, -8.0), np.log(p / (1 - p))])
    ).float()


@pytest.mark.parametrize("target", ["boundary", "distance"])
def test_instance_targets_recover_touching_particles(target: str) -> None:
    lab = _touching_disks()
    post = PostProcess(target)
    found = post.instances(_outputs(lab, target))
    assert found.dtype == np.int32 and found.max() == 5
    match = match_instances(lab, found)
    assert match["f1"] == 1.0 and match["mean_matched_iou"] > 0.95
    # the particle without an interior or a core is still one particle (its own seed)
    assert len(np.unique(found[50:53, 10:13])) == 1 and found[51, 11] > 0
    np.testing.assert_array_equal(post.mask(_outputs(lab, target))[0].numpy(), lab > 0)


def test_binary_target_is_label_particles_of_its_mask() -> None:
    lab = _touching_disks()
    post = PostProcess("binary")
    found = post.instances(_outputs(lab, "binary"))
    np.testing.assert_array_equal(found, label_particles(lab > 0, split_touching=True))
    unsplit = PostProcess("binary", split_touching=False).instances(_outputs(lab, "binary"))
    assert unsplit.max() == found.max() - 1  # the two touching disks stay one


def test_seeds_below_the_threshold_leave_particles_whole() -> None:
    lab = _touching_disks()
    out = _outputs(lab, "distance")
    # small cores (d > 0.95: a few px at each centre) still seed one particle each
    assert PostProcess("distance", seed_threshold=0.95).instances(out).max() == 5
    # a mask with no seed at all: every component is one particle, specks dropped
    fg = lab > 0
    whole = seeded_watershed(fg, np.zeros_like(fg), np.zeros(fg.shape), min_area=5)
    assert whole.max() == 3  # the pair of disks, the third disk, the 3x3 one; not the 2x2


def test_particle_logit_of_each_target() -> None:
    logits = torch.randn(2, 3, 5, 7)
    fg = PostProcess("boundary").foreground_logit(logits)
    p = torch.softmax(logits, dim=1)
    torch.testing.assert_close(torch.sigmoid(fg), (p[:, 1:2] + p[:, 2:3]))
    two = torch.randn(2, 5, 7)
    torch.testing.assert_close(PostProcess("distance").foreground_logit(two), two[:1])
    assert PostProcess("binary", threshold=0.9).mask(torch.tensor([[[2.0, 2.5]]])).tolist() == [
        [[False, True]]
    ]


def test_postprocess_of_a_config_and_its_checks() -> None:
    cfg = TrialConfig(target="distance", seed_threshold=0.3, threshold=0.4)
    post = PostProcess.of(cfg, split_touching=False)
    assert post.to_dict() == {
        "target": "distance",
        "threshold": 0.4,
        "seed_threshold": 0.3,
        "split_touching": False,
        "min_area": 4,
        "min_relative_area": 0.0,
    }
    assert post.channels == cfg.classes == 2
    with pytest.raises(ValueError, match="unknown target"):
        PostProcess("flow")
    with pytest.raises(ValueError, match="seed_threshold"):
        PostProcess("boundary", seed_threshold=1.0)
    with pytest.raises(ValueError, match=r"needs outputs \(\.\.\., 3, H, W\)"):
        PostProcess("boundary").instances(torch.zeros(1, 8, 8))


def test_relative_size_filter_drops_letters_beside_a_large_particle_only() -> None:
    """One large particle (a disk of radius 30, ~2800 px) with a panel letter and scale-bar
    ticks (40-60 px) beside it: 5 % of the area-weighted median area (141 px) drops them. A field of
    many small particles and one large one keeps every particle: the area-weighted median is
    then the small ones' size."""
    yy, xx = np.mgrid[:128, :160]
    lab = np.zeros((128, 160), np.int32)
    lab[(yy - 64) ** 2 + (xx - 80) ** 2 <= 900] = 1
    lab[5:13, 5:11] = 2  # the panel letter, 48 px
    lab[120:124, 100:115] = 3  # a scale-bar tick, 60 px
    lab[120:124, 130:140] = 4  # another, 40 px
    kept = drop_relatively_small(lab, 0.05)
    assert drop_relatively_small(lab, 0.02).max() == 2  # 57 px: the 60 px tick stays
    assert kept.max() == 1 and (kept > 0).sum() == (lab == 1).sum()
    np.testing.assert_array_equal(drop_relatively_small(lab, 0.0), lab)

    field = np.zeros((128, 160), np.int32)
    k = 0
    for r in range(8, 120, 14):
        for c in range(8, 100, 14):
            k += 1
            field[(yy - r) ** 2 + (xx - c) ** 2 <= 16] = k  # radius 4: ~50 px each
    field[(yy - 64) ** 2 + (xx - 135) ** 2 <= 400] = k + 1  # radius 20: ~1250 px
    assert drop_relatively_small(field, 0.05).max() == k + 1


def test_postprocess_applies_its_relative_size_filter_for_every_target() -> None:
    lab = _touching_disks()  # three disks of ~250 px, a 3x3 particle, a 2x2 speck
    for target in ("binary", "boundary", "distance"):
        out = _outputs(lab, target)
        assert PostProcess(target).instances(out).max() == 5
        # 5 % of ~250 px = 13 px: the 3x3 particle and the 2x2 speck go, the disks stay
        post = PostProcess(target, min_relative_area=0.05)
        found = post.instances(out)
        assert found.max() == 3 and found[51, 11] == 0 and found[5, 70] == 0
        if target == "binary":  # the filter applies once, whichever way particles are made
            np.testing.assert_array_equal(found, post.label_mask(post.mask(out)[0].numpy()))
    with pytest.raises(ValueError, match="min_relative_area"):
        PostProcess("binary", min_relative_area=1.0)
    cfg = TrialConfig(target="boundary", min_relative_area=0.05)
    assert PostProcess.of(cfg).to_dict()["min_relative_area"] == 0.05
