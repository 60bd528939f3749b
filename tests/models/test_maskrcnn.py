"""Mask R-CNN, the instance model: exact per-instance targets from touching particles, the
config rules, the grey backbone and its offline ImageNet weights, training and eval outputs,
and detections -> instance maps (overlaps by score) -> particles (PostProcess 'instances')."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import disk

from emseg_search.config import ConfigError, TrialConfig
from emseg_search.data.datasets import TileDataset
from emseg_search.data.loading import Micrograph
from emseg_search.data.targets import derive_target
from emseg_search.models.maskrcnn import detections_to_maps, instance_targets
from emseg_search.models.registry import (
    build_model,
    check_encoder,
    check_input_size,
    min_input_size,
    required_stride,
)
from emseg_search.particles.postprocess import PostProcess


def _cfg(**fields: object) -> TrialConfig:
    return TrialConfig(**{"arch": "maskrcnn", "encoder": "mobilenet_v2", **fields})


def test_instance_targets_are_exact_for_touching_particles() -> None:
    # two disks that touch (centres 10 px apart, radii 5 and 6) and one apart
    lab = disk(40, 48, [(12, 12, 5), (12, 22, 6), (30, 36, 4)])
    lab[lab == 3] = 7  # ids need not be consecutive
    assert ((lab == 1) & np.roll(lab == 2, -1, axis=1)).any()  # they do touch
    t = instance_targets(torch.from_numpy(lab.astype(np.float32)))
    assert t["labels"].tolist() == [1, 1, 1]
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (3, 40, 48)
    for k, i in enumerate([1, 2, 7]):
        assert torch.equal(t["masks"][k].bool(), torch.from_numpy(lab == i))
        ys, xs = np.nonzero(lab == i)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # pixel edges
        assert t["boxes"][k].tolist() == expected
    # disk (12, 12) of radius 5, its right rim (column 17) taken by its neighbour
    assert t["boxes"][0].tolist() == [7, 7, 17, 18]


def test_instance_targets_of_an_empty_tile_and_of_a_split_instance() -> None:
    empty = instance_targets(torch.zeros(16, 20))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 16, 20)
    assert empty["labels"].shape == (0,)
    cut = np.zeros((10, 10), np.int64)
    cut[1, 1] = cut[8, 6] = 3  # one id in two pieces (a crop or a warp cut it)
    t = instance_targets(cut)
    assert t["boxes"].tolist() == [[1, 1, 7, 9]]


def test_tiles_move_instance_ids_with_the_image() -> None:
    from emseg_search.augment import build_augment

    lab = disk(64, 64, [(20, 20, 9), (20, 37, 9), (45, 45, 12)]).astype(np.uint16) * 300
    image = np.where(lab > 0, 60, 200).astype(np.uint8)
    held = derive_target(lab, "instances")
    assert held.dtype == np.uint16 and np.array_equal(held, lab)
    ds = TileDataset(
        [Micrograph("a", image, lab)],
        tile_size=48,
        mean=0.5,
        std=0.25,
        samples_per_epoch=8,
        transform=build_augment("heavy", 1.0),
        target="instances",
    )
    for i in range(8):
        item = ds[i]
        ids = item["mask"][0]
        assert item["mask"].shape == (1, 48, 48)
        assert set(torch.unique(ids).tolist()) <= {0.0, 300.0, 600.0, 900.0}  # no blended ids
        # dark pixels are the particles: the moved ids still sit on them
        dark = item["image"][0] < 0
        assert ((ids > 0) == dark).float().mean() > 0.9  # (noise and blur blur the rims)


def test_config_rules_for_the_instance_model() -> None:
    assert _cfg().target == "instances" and _cfg().classes == 3
    assert _cfg(target="boundary").target == "instances"  # searched beside semantic targets
    with pytest.raises(ConfigError, match="instance architectures only"):
        TrialConfig.from_dict({"arch": "unet", "target": "instances"})
    with pytest.raises(ValueError, match="arch 'maskrcnn' takes a torchvision MobileNetV2"):
        check_encoder(_cfg(encoder="resnet18"))
    cfg = _cfg(tile_size=100)
    check_input_size(cfg)  # any size >= 64: the detector pads itself
    assert (required_stride(cfg), min_input_size(cfg)) == (1, 64)
    with pytest.raises(ValueError, match="output_stride"):
        build_model(_cfg(output_stride=16))


def test_training_gives_losses_and_eval_gives_instance_maps() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg())
    inst = torch.zeros(2, 1, 64, 64)
    inst[0, 0, 8:24, 8:24] = 1
    inst[0, 0, 8:24, 24:40] = 2  # touching
    # the second tile has no particle: an empty target
    losses = model.train()(torch.randn(2, 1, 64, 64), inst)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    # a batch without any particle still reaches every parameter (zero mask and box losses):
    # DDP needs no find_unused_parameters, whatever a rank's tiles hold
    empty = model(torch.randn(2, 1, 64, 64), torch.zeros(2, 1, 64, 64))
    assert empty["loss_mask"] == 0 and empty["loss_box_reg"] == 0
    sum(empty.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    with torch.inference_mode():
        out = model.eval()(torch.randn(1, 1, 45, 70))  # any size: no resize, no stride
    assert out.shape == (1, 3, 45, 70)


def test_offline_imagenet_weights_load_into_the_grey_backbone() -> None:
    from emseg_search.models.pretrained import WeightsUnavailableError, load_encoder_state

    try:
        state = load_encoder_state("mobilenet_v2")
    except WeightsUnavailableError:
        pytest.skip("offline weights not fetched (python -m emseg_search weights fetch)")
    model = build_model(_cfg(encoder_weights="imagenet-offline"))
    body = model.encoder
    assert torch.equal(body["0"][0].weight, state["features.0.0.weight"].sum(1, keepdim=True))
    assert torch.equal(body["13"].conv[0][0].weight, state["features.13.conv.0.0.weight"])


def _detections(scores: list[float], boxes: list[list[float]], masks: torch.Tensor) -> dict:
    return {
        "scores": torch.tensor(scores),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "masks": masks,
        "labels": torch.ones(len(scores), dtype=torch.int64),
    }


def test_detections_become_instances_overlaps_going_to_the_higher_score() -> None:
    full = torch.ones(3, 1, 28, 28)  # each mask fills its box
    det = _detections(
        [0.6, 0.9, 0.3],
        [[0, 0, 20, 20], [10, 0, 30, 20], [35, 25, 45, 35]],
        full * torch.tensor([0.8, 0.7, 0.9])[:, None, None, None],
    )
    maps = detections_to_maps(det, (40, 50))
    ids, score = maps[1], maps[2]
    assert ids[5, 25] == 1 and score[5, 25] == pytest.approx(0.9)  # only the best box
    assert ids[5, 15] == 1  # overlap: the higher score wins
    assert ids[5, 5] == 2 and score[5, 5] == pytest.approx(0.6)
    assert ids[30, 40] == 3 and ids[38, 5] == 0
    assert maps[0][5, 15] == pytest.approx(torch.logit(torch.tensor(0.7)).item(), abs=1e-4)
    assert (maps[0] > 0).equal(ids > 0)  # particle logit > 0 exactly on instance pixels

    post = PostProcess("instances", score_threshold=0.5)
    labels = post.instances(maps)
    assert labels.max() == 2  # the 0.3 detection is not a particle
    assert np.array_equal(labels > 0, post.mask(maps)[0].numpy())
    assert np.array_equal(labels, np.where(ids.numpy() == 3, 0, ids.numpy()))
    # thresholding afterwards equals dropping the detection before pasting
    assert np.array_equal(
        labels,
        PostProcess("instances", score_threshold=0.01).instances(
            detections_to_maps(
                _detections([0.6, 0.9], [[0, 0, 20, 20], [10, 0, 30, 20]], det["masks"][:2]),
                (40, 50),
            )
        ),
    )


def test_a_detection_below_the_mask_threshold_leaves_the_pixel_to_the_next() -> None:
    masks = torch.zeros(2, 1, 28, 28)
    masks[0, 0, :, :14] = 0.9  # the better detection claims only its left half
    masks[1] = 0.8
    det = _detections([0.9, 0.8], [[0, 0, 20, 20], [0, 0, 20, 20]], masks)
    ids = detections_to_maps(det, (24, 24))[1]
    assert ids[10, 3] == 1 and ids[10, 17] == 2


def test_no_detection_is_no_particle() -> None:
    empty = _detections([], [], torch.zeros(0, 1, 28, 28))
    empty["boxes"] = empty["boxes"].reshape(0, 4)
    maps = detections_to_maps(empty, (8, 9))
    assert maps.shape == (3, 8, 9) and (maps[1:] == 0).all() and (maps[0] < 0).all()
    assert PostProcess("instances").instances(maps).max() == 0


def test_a_search_space_may_list_maskrcnn_beside_unet() -> None:
    """maskrcnn with its own encoders beside unet; a sampled target or loss applies to unet
    and is replaced (target) or ignored (loss) for maskrcnn."""
    from emseg_search.space.errors import SpaceError
    from emseg_search.space.spec import space_from_dict

    values = {
        "name": "instances",
        "metric": "val_particle_f1",
        "budget": {"num_samples": 4},
        "scheduler": {"type": "asha", "max_epochs": 3},
        "fixed": {"tile_size": 128, "batch_size": 4, "encoder_weights": "imagenet-offline"},
        "parameters": {
            "arch": {"type": "categorical", "choices": ["unet", "maskrcnn"]},
            "encoder": {
                "type": "categorical",
                "depends_on": "arch",
                "choices": {
                    "unet": ["mobilenet_v2", "timm-tf_efficientnet_lite0"],
                    "maskrcnn": ["mobilenet_v2"],
                },
            },
            "target": {"type": "categorical", "choices": ["binary", "boundary"]},
            "loss": {"type": "categorical", "choices": ["dice", "focal"]},
            "score_threshold": {
                "type": "float",
                "low": 0.3,
                "high": 0.7,
                "when": {"arch": ["maskrcnn"]},
            },
        },
    }
    space = space_from_dict(values, source="instances.yaml")
    draws = [space.random_params(np.random.default_rng(seed)) for seed in range(20)]
    configs = [space.trial_config(p) for p in draws]
    assert {c.arch for c in configs} == {"unet", "maskrcnn"}
    for params, cfg in zip(draws, configs, strict=True):
        expected = "instances" if cfg.arch == "maskrcnn" else params["target"]
        assert cfg.target == expected
    bad = copy.deepcopy(values)
    bad["parameters"]["encoder"]["choices"]["maskrcnn"] = ["resnet18"]
    with pytest.raises(SpaceError, match="maskrcnn"):
        space_from_dict(bad, source="bad.yaml")
