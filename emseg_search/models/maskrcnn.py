"""Mask R-CNN (torchvision) as an instance model: grey tiles in, particles (boxes + masks) out.

``build_maskrcnn(cfg)`` returns a ``MaskRCNNSegmenter``, torchvision's ``MaskRCNN`` on a
MobileNetV2 + FPN backbone, sized for particles of ~10-150 px on a 2-core CPU:

- input: the project's grey tiles (N, 1, H, W), already normalised by the data layer, so the
  detector's own transform normalises with mean 0 / std 1 and never resizes (torchvision's
  ``min_size``/``max_size`` would scale a 256-px tile to 800 px); it pads each batch to a
  multiple of 32 with zeros (the mean intensity), and results come back at the input's size;
- backbone: torchvision's MobileNetV2 with a one-channel first conv (RGB ImageNet weights
  summed over the colour axis, as for the smp encoders), BatchNorm trained as in the semantic
  models; the FPN (128 channels) reads strides 4, 8, 16 and 32 (blocks 3, 6, 13 and 17; the
  1280-channel head conv is dropped) plus a max-pooled level at 64;
- anchors 12, 24, 48, 96 and 192 px (one size per level) x aspect ratios 0.5, 1, 2; RPN keeps
  1000 / 500 proposals (train) and 1000 / 600 (inference) before / after NMS; box and mask
  heads lighter than torchvision's defaults (512-wide box MLP, 128-channel mask convs, 128
  sampled RoIs per tile instead of 512: the mask head on the positive RoIs dominates a CPU
  training step);
  at most ``MAX_DETECTIONS`` detections per image, scoring at least ``cfg.score_threshold``
  (torchvision's ``box_score_thresh``: weaker detections never reach the mask head, which
  would otherwise spend most of the CPU time of an untrained model on them).

Training mode: ``model(images, instances)`` takes the (N, 1, H, W) instance-id maps of the
batch (data.targets: target 'instances'), turns each into boxes, masks and labels
(``instance_targets``; a tile without particles is a valid, empty target) and returns
torchvision's loss dict (RPN objectness and box, ROI class, box and mask). Eval mode:
``model(images)`` returns (N, 3, H, W) maps that the rest of the project reads like any
model's outputs (``particles.postprocess``, target 'instances'): a particle logit, the
instance id and the detection score per pixel (``detections_to_maps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

from emseg_search.config import TrialConfig

MASKRCNN_ENCODERS = ("mobilenet_v2",)  # backbones with offline ImageNet weights (pretrained.py)
MIN_INPUT = 64  # smallest H and W: the stride-32 level keeps 2 x 2 px (BatchNorm of a batch of 1)
ANCHOR_SIZES = ((12,), (24,), (48,), (96,), (192,))  # px, one size per FPN level
ASPECT_RATIOS = (0.5, 1.0, 2.0)
FPN_CHANNELS = 128
RETURN_BLOCKS = {"3": "0", "6": "1", "13": "2", "17": "3"}  # MobileNetV2 blocks at stride 4-32
MAX_DETECTIONS = 500  # per image (EMPS micrographs hold up to a few hundred particles)


def instance_targets(instances: Tensor | np.ndarray) -> dict[str, Tensor]:
    """torchvision detection targets of one instance map (H, W) (float or integer ids, 0 =
    background): per instance, in increasing id order, ``masks`` (K, H, W) uint8, ``boxes``
    (K, 4) float32 (x0, y0, x1, y1) enclosing every pixel of the id (pixel edges: a 1-px
    particle at (y, x) has box (x, y, x + 1, y + 1)), ``labels`` (K,) int64 all 1
    (particle). An id split into pieces (by a crop or a warp) stays one instance. No
    instance: boxes (0, 4), masks (0, H, W)."""
    ids_map = torch.as_tensor(instances)
    if ids_map.dim() != 2:
        raise ValueError(f"expected one instance map (H, W), got shape {tuple(ids_map.shape)}")
    ids_map = ids_map.round().long() if ids_map.is_floating_point() else ids_map.long()
    ids = torch.unique(ids_map)
    ids = ids[ids > 0]
    masks = ids_map[None] == ids[:, None, None]  # (K, H, W)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (K, H), (K, W)
    h, w = ids_map.shape
    y = torch.arange(h, device=ids_map.device)
    x = torch.arange(w, device=ids_map.device)
    boxes = torch.stack(
        [
            torch.where(cols, x, w).amin(dim=1),
            torch.where(rows, y, h).amin(dim=1),
            torch.where(cols, x, -1).amax(dim=1) + 1,
            torch.where(rows, y, -1).amax(dim=1) + 1,
        ],
        dim=1,
    ).to(torch.float32)
    return {
        "boxes": boxes.reshape(-1, 4),
        "labels": torch.ones(len(ids), dtype=torch.int64, device=ids_map.device),
        "masks": masks.to(torch.uint8),
    }


def _no_resize_transform() -> nn.Module:
    """torchvision's GeneralizedRCNNTransform that never resizes and leaves masks unpasted."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class FixedSizeTransform(GeneralizedRCNNTransform):
        """Inputs keep their size (no min_size/max_size rescale); ``postprocess`` leaves the
        28 x 28 mask probabilities per detection (``detections_to_maps`` pastes them)."""

        def resize(
            self, image: Tensor, target: dict[str, Tensor] | None = None
        ) -> tuple[Tensor, dict[str, Tensor] | None]:
            return image, target

        def postprocess(
            self,
            result: list[dict[str, Tensor]],
            image_shapes: list[tuple[int, int]],
            original_image_sizes: list[tuple[int, int]],
        ) -> list[dict[str, Tensor]]:
            return result

    # mean 0, std 1: the data layer has normalised the grey input already
    return FixedSizeTransform(MIN_INPUT, 4096, image_mean=[0.0], image_std=[1.0])


def _grey_mobilenet_v2(cfg: TrialConfig) -> nn.Module:
    """torchvision MobileNetV2 ``features`` with a 1-channel first conv and cfg's weights."""
    from torchvision.models import mobilenet_v2

    from emseg_search.models.pretrained import read_encoder_weights
    from emseg_search.models.state_dict import load_state_into

    features = mobilenet_v2(weights=None).features
    first = features[0][0]
    features[0][0] = nn.Conv2d(
        1, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False
    )
    nn.init.kaiming_normal_(features[0][0].weight, mode="fan_out")
    if cfg.encoder_weights is None:
        return features
    if cfg.encoder_weights == "imagenet":  # smp's hub weights: torchvision's MobileNetV2
        import segmentation_models_pytorch as smp

        hub = smp.encoders.get_encoder(cfg.encoder, in_channels=3, weights="imagenet")
        state, source = hub.state_dict(), f"smp hub weights of {cfg.encoder}"
    else:
        state, source = read_encoder_weights(cfg)
    # torchvision / smp key names ("features.N...", classifier dropped); a .pth of a whole
    # model keeps its "features." part
    state = {k.split("features.", 1)[1]: v for k, v in state.items() if "features." in k}
    load_state_into(features, state, source)  # sums the first conv's RGB weights to grey
    return features


def detector_settings(cfg: TrialConfig) -> dict[str, Any]:
    """How the detector of ``cfg`` finds and resolves particles (artifact.json: ``detector``)."""
    return {
        "backbone": f"{cfg.encoder} + FPN ({FPN_CHANNELS} channels, strides 4-32 + pool)",
        "anchor_sizes_px": [s[0] for s in ANCHOR_SIZES],
        "aspect_ratios": list(ASPECT_RATIOS),
        "proposals_train": [1000, 500],  # before / after NMS, per tile
        "sampled_rois_train": 128,  # per tile, up to 25 % positive
        "proposals_inference": [1000, 600],
        "max_detections": MAX_DETECTIONS,
        "box_score_threshold": cfg.score_threshold,
        "mask_threshold": cfg.threshold,
        "overlap": "a pixel goes to the highest-scoring detection whose mask exceeds it",
        "resize": "none (the input's size)",
    }


def build_maskrcnn(cfg: TrialConfig) -> MaskRCNNSegmenter:
    """Mask R-CNN for ``cfg`` (see the module docstring); encoder weights loaded."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if cfg.encoder not in MASKRCNN_ENCODERS:
        raise ValueError(
            f"encoder: arch 'maskrcnn' takes {', '.join(MASKRCNN_ENCODERS)}, got {cfg.encoder!r}"
        )
    features = _grey_mobilenet_v2(cfg)
    channels = [features[int(i)].out_channels for i in RETURN_BLOCKS]
    backbone = BackboneWithFPN(
        features, RETURN_BLOCKS, channels, FPN_CHANNELS, extra_blocks=LastLevelMaxPool()
    )
    detector = MaskRCNN(
        backbone,
        num_classes=None,  # the predictors below: 2 classes, background and particle
        rpn_anchor_generator=AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES)),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=600,
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, 512),
        box_predictor=FastRCNNPredictor(512, 2),
        box_score_thresh=cfg.score_threshold,
        box_detections_per_img=MAX_DETECTIONS,
        box_batch_size_per_image=128,  # 32 positives a tile: half the time of 256
        mask_head=MaskRCNNHeads(FPN_CHANNELS, (FPN_CHANNELS,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(FPN_CHANNELS, FPN_CHANNELS, 2),
    )
    detector.transform = _no_resize_transform()
    return MaskRCNNSegmenter(detector, mask_threshold=cfg.threshold)


class MaskRCNNSegmenter(nn.Module):
    """torchvision's Mask R-CNN on grey (N, 1, H, W) batches: a loss dict in training (given
    the instance maps), (N, 3, H, W) particle-logit / instance-id / score maps in eval."""

    def __init__(self, detector: nn.Module, mask_threshold: float = 0.5) -> None:
        super().__init__()
        self.detector = detector
        self.mask_threshold = float(mask_threshold)

    def set_score_threshold(self, threshold: float) -> None:
        """Keep detections scoring at least ``threshold`` from now on (a lower one than the
        trained ``score_threshold`` lets weaker detections reach the mask head)."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"score threshold must lie in (0, 1), got {threshold}")
        self.detector.roi_heads.score_thresh = float(threshold)

    @property
    def encoder(self) -> nn.Module:
        """The MobileNetV2 blocks the FPN reads."""
        return self.detector.backbone.body

    def forward(
        self, images: Tensor, instances: Tensor | None = None
    ) -> dict[str, Tensor] | Tensor:
        """Training: (N, 1, H, W) images and instance maps -> torchvision's loss dict.
        Eval: (N, 1, H, W) images -> (N, 3, H, W) maps (``detections_to_maps``)."""
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected grey images (N, 1, H, W), got {tuple(images.shape)}")
        if self.training:
            if instances is None:
                raise ValueError(
                    "maskrcnn trains on the batch's instance maps: model(x, instances)"
                )
            targets = [instance_targets(m[0]) for m in instances]
            return self.detector(list(images.float()), targets)
        detections = self.detector(list(images.float()))
        size = (images.shape[-2], images.shape[-1])
        return torch.stack([detections_to_maps(d, size, self.mask_threshold) for d in detections])


def detections_to_maps(
    detection: dict[str, Tensor], size: tuple[int, int], mask_threshold: float = 0.5
) -> Tensor:
    """One image's detections -> (3, H, W) float32: the particle logit, the instance id (1 =
    highest score; 0 = none) and that instance's detection score (0 where none).

    Each detection's 28 x 28 mask probabilities are pasted into its box as torchvision does
    (bilinear, one pixel of padding) but one at a time, so memory stays one image whatever
    the number of detections. Overlaps go by score: a pixel belongs to the highest-scoring
    detection whose mask probability there exceeds ``mask_threshold``. The particle logit is
    logit(that detection's probability) on owned pixels, else logit(the largest probability
    of any detection), below logit(mask_threshold). So keeping only detections scoring at
    least s afterwards (``PostProcess``) is exact: a pixel whose owner scores below s is
    covered by no detection scoring s or more.

    TorchScript compiles it as it is (``script_for_export``): the exported model pastes the
    same way.
    """
    h, w = size[0], size[1]
    ids = torch.zeros((h, w), dtype=torch.float32)
    score = torch.zeros((h, w), dtype=torch.float32)
    owned = torch.zeros((h, w), dtype=torch.float32)  # probability of the owner
    most = torch.zeros((h, w), dtype=torch.float32)  # largest probability of any detection
    scores = detection["scores"].detach().float().cpu()
    if scores.numel() > 0:
        masks, scale = expand_masks(detection["masks"].detach().float().cpu(), 1)
        boxes = expand_boxes(detection["boxes"].detach().float().cpu(), scale).to(torch.int64)
        order: list[int] = scores.argsort(descending=True).tolist()
        for rank, k in enumerate(order):
            box: list[int] = boxes[k].tolist()
            x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
            bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
            cx0, cx1, cy0, cy1 = max(x0, 0), min(x1 + 1, w), max(y0, 0), min(y1 + 1, h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            prob = F.interpolate(
                masks[k][None], size=[bh, bw], mode="bilinear", align_corners=False
            )[0, 0]
            prob = prob[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            # views of the box's region: the in-place writes land in the maps
            region_ids = ids[cy0:cy1, cx0:cx1]
            region_score = score[cy0:cy1, cx0:cx1]
            region_owned = owned[cy0:cy1, cx0:cx1]
            region_most = most[cy0:cy1, cx0:cx1]
            take = (region_ids == 0) & (prob > mask_threshold)
            region_ids.masked_fill_(take, float(rank + 1))
            region_score.masked_fill_(take, float(scores[k]))
            region_owned.copy_(torch.where(take, prob, region_owned))
            region_most.copy_(torch.maximum(region_most, prob))
    eps = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit
    prob = torch.where(ids > 0, owned, most).clamp(eps, 1 - eps)
    return torch.stack([torch.logit(prob), ids, score])


class ExportedMaskRCNN(nn.Module):
    """The eval path of ``MaskRCNNSegmenter`` in a form TorchScript compiles: (N, 1, H, W)
    normalised grey images -> (N, 3, H, W) maps (``detections_to_maps``)."""

    def __init__(self, detector: nn.Module, mask_threshold: float) -> None:
        super().__init__()
        self.detector = detector
        self.mask_threshold = float(mask_threshold)

    def forward(self, images: Tensor) -> Tensor:
        """The maps of each image, as ``MaskRCNNSegmenter`` in eval mode gives them."""
        batch = [images[i].float() for i in range(images.shape[0])]
        # scripted, torchvision's detector returns (losses, detections)
        _, detections = self.detector(batch)
        size = (images.shape[-2], images.shape[-1])
        maps = [detections_to_maps(d, size, self.mask_threshold) for d in detections]
        return torch.stack(maps)


def script_for_export(model: MaskRCNNSegmenter) -> torch.jit.ScriptModule:
    """``model``'s eval path compiled by TorchScript (a copy; ``model`` is left as it is), with
    its current score threshold. Scripting, not tracing: the number of detections is the
    data's, which a trace would freeze to its example's."""
    import copy
    import warnings

    detector = copy.deepcopy(model.detector).eval()
    with warnings.catch_warnings():
        # torchvision warns that a scripted detector returns (losses, detections): it is read so
        warnings.filterwarnings("ignore", "RCNN always returns", UserWarning)
        return torch.jit.script(ExportedMaskRCNN(detector, model.mask_threshold))


def maskrcnn_unused_parameters(model: MaskRCNNSegmenter, size: int = 64) -> list[str]:
    """Parameters that get no gradient from a training step on two (1, size, size) zero images
    with one square particle each; BatchNorm statistics are restored afterwards."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    instances = torch.zeros(2, 1, size, size)
    instances[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    losses = model(torch.zeros(2, 1, size, size), instances)
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    model.train(training)
    return unused
