"""Architecture registry and ``build_model(cfg)``: smp, torchvision FCN and Mask R-CNN,
1 channel -> C outputs.

Every semantic model maps (N, 1, H, W) -> raw logits (N, C, H, W), C = ``cfg.classes`` (1 for
the binary target, 3 boundary, 2 distance), when H and W are multiples of
``required_stride(cfg)`` and at least ``min_input_size(cfg)``. The instance model, maskrcnn
(models/maskrcnn.py), maps them in eval mode to (N, 3, H, W) particle-logit / instance-id /
score maps at any size of at least 64, and in training mode takes the instance maps too and
returns its losses.

DDP: some parameters get no gradient, so DistributedDataParallel needs
``find_unused_parameters=True`` (the trainer handles it; ``unused_parameters`` measures it):
smp encoders keep every stage when ``encoder_depth < 5`` (fcn drops them), smp's
``timm-tf_efficientnet_lite*`` keep their ``conv_head``, and dpt keeps the ViT's norm and head.
deeplabv3, deeplabv3plus, pan and upernet pool to 1x1 before a BatchNorm: training needs
batches of at least 2 per worker (``min_batch_size``).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from emseg_search.config import INSTANCE_ARCHS, TrialConfig
from emseg_search.models.maskrcnn import (
    MASKRCNN_ENCODERS,
    MIN_INPUT,
    build_maskrcnn,
    maskrcnn_unused_parameters,
)
from emseg_search.models.pretrained import (
    WeightsUnavailableError,
    apply_encoder_weights,
    hub_unavailable_message,
    offline_entry,
    read_encoder_weights,
)
from emseg_search.models.state_dict import (
    load_state_into,
    pretrained_normalization,
)

Builder = Callable[[TrialConfig], nn.Module]

FCN_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101")  # torchvision ResNets
_DILATED = ("resnet50", "resnet101")  # Bottleneck ResNets: dilated like fcn_resnet50 (stride 8)
_DEFAULT_OUTPUT_STRIDE = {"deeplabv3": 8, "deeplabv3plus": 16}  # smp's defaults
_PAN_STRIDE = 16  # smp PAN's encoder_output_stride default
_BATCH_STATS = ("deeplabv3", "deeplabv3plus", "pan", "upernet")  # BatchNorm on 1x1 maps
_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's U-Net default; shallower nets keep the tail
_DPT_CHANNELS = (256, 512, 1024, 1024, 1024)  # smp's DPT default (4 stages), one more for depth 5


def _smp_weights(cfg: TrialConfig) -> str | bool | None:
    """What smp's `encoder_weights` gets: only 'imagenet' reaches the hub (True for tu-)."""
    if cfg.encoder_weights != "imagenet":
        return None  # 'imagenet-offline' and .pth files are loaded afterwards
    return True if cfg.encoder.startswith("tu-") else "imagenet"


def _smp(cls_name: str, extra: Callable[[TrialConfig], dict[str, Any]] | None = None) -> Builder:
    """A builder for smp's ``cls_name`` with in_channels=1, classes=cfg.classes and per-arch
    kwargs."""

    def build(cfg: TrialConfig) -> nn.Module:
        import segmentation_models_pytorch as smp  # ~1.3 s: only when a model is built

        return getattr(smp, cls_name)(
            encoder_name=cfg.encoder,
            encoder_depth=cfg.encoder_depth,
            encoder_weights=_smp_weights(cfg),
            in_channels=1,
            classes=cfg.classes,
            **(extra(cfg) if extra else {}),
        )

    build.__name__ = f"build_{cls_name.lower()}"
    build.__doc__ = f"smp.{cls_name} for ``cfg``: (N, 1, H, W) -> logits (N, C, H, W)."
    return build


def _decoder_channels(cfg: TrialConfig) -> dict[str, Any]:
    return {"decoder_channels": _DECODER_CHANNELS[-cfg.encoder_depth :]}


def _output_stride(cfg: TrialConfig) -> dict[str, Any]:
    return {"encoder_output_stride": cfg.output_stride or _DEFAULT_OUTPUT_STRIDE[cfg.arch]}


def _dpt(cfg: TrialConfig) -> dict[str, Any]:
    # dynamic_img_size: eval images are padded to varying sizes, ViT position embeddings adapt
    return {
        "decoder_intermediate_channels": _DPT_CHANNELS[: cfg.encoder_depth],
        "dynamic_img_size": True,
    }


class FCN(nn.Module):
    """torchvision's FCN returning a plain logit tensor; ``encoder`` is its ResNet backbone."""

    def __init__(self, fcn: nn.Module) -> None:
        super().__init__()
        self.fcn = fcn

    @property
    def encoder(self) -> nn.Module:
        """The backbone (torchvision ResNet layers up to ``layer{encoder_depth - 1}``)."""
        return self.fcn.backbone

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, H, W) -> logits (N, C, H, W) (bilinear upsampling inside torchvision's FCN)."""
        return self.fcn(x)["out"]


def build_fcn(cfg: TrialConfig) -> nn.Module:
    """FCN head on a torchvision ResNet (1 input channel, nothing downloaded but smp's hub)."""
    from torchvision.models import resnet
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN as TorchvisionFCN
    from torchvision.models.segmentation.fcn import FCNHead

    dilated = cfg.encoder in _DILATED
    backbone = getattr(resnet, cfg.encoder)(
        weights=None, replace_stride_with_dilation=[False, True, True] if dilated else None
    )
    backbone.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
    layer = f"layer{cfg.encoder_depth - 1}"  # depth 5 -> layer4 (as fcn_resnet50), 3 -> layer2
    channels = {"layer2": 128, "layer3": 256, "layer4": 512}[layer] * (4 if dilated else 1)
    backbone = IntermediateLayerGetter(backbone, return_layers={layer: "out"})
    if cfg.encoder_weights == "imagenet":  # smp's ResNet encoders are torchvision's ResNets
        import segmentation_models_pytorch as smp

        hub = smp.encoders.get_encoder(cfg.encoder, in_channels=1, weights="imagenet")
        load_state_into(
            backbone,
            hub.state_dict(),
            f"smp hub weights of {cfg.encoder}",
            truncated=cfg.encoder_depth < 5,
        )
    return FCN(TorchvisionFCN(backbone, FCNHead(channels, cfg.classes)))


ARCHITECTURES: dict[str, Builder] = {
    "unet": _smp("Unet", _decoder_channels),
    "unetplusplus": _smp("UnetPlusPlus", _decoder_channels),
    "manet": _smp("MAnet", _decoder_channels),
    "linknet": _smp("Linknet"),
    "fpn": _smp("FPN", lambda cfg: {"upsampling": 2 ** (cfg.encoder_depth - 3)}),
    "pspnet": _smp("PSPNet", lambda cfg: {"upsampling": 2**cfg.encoder_depth}),
    "deeplabv3": _smp("DeepLabV3", _output_stride),
    "deeplabv3plus": _smp("DeepLabV3Plus", _output_stride),
    "pan": _smp("PAN"),
    "upernet": _smp("UPerNet"),
    "segformer": _smp("Segformer"),
    "dpt": _smp("DPT", _dpt),
    "fcn": build_fcn,
    "maskrcnn": build_maskrcnn,
}


def _builder(arch: str) -> Builder:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"arch: unknown architecture {arch!r}; valid: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[arch]


@functools.lru_cache(maxsize=1)
def _encoder_names() -> tuple[list[str], list[str]]:
    """(smp's own encoder names, timm model names usable as 'tu-<name>')."""
    import segmentation_models_pytorch as smp
    import timm

    return sorted(smp.encoders.get_encoder_names()), timm.list_models()


@functools.lru_cache(maxsize=64)
def _timm_reduction(encoder: str) -> int:
    """Largest feature reduction of a 'tu-' timm model (a ViT's patch size); built on 'meta'."""
    import timm
    import torch

    with torch.device("meta"):  # no memory, no weights: only the feature_info is read
        model = timm.create_model(encoder.removeprefix("tu-"), pretrained=False)
    return max(int(info["reduction"]) for info in model.feature_info)


def check_encoder(cfg: TrialConfig) -> None:
    """Raise ValueError if ``cfg.encoder`` does not exist or does not fit ``cfg.arch``."""
    enc, arch = cfg.encoder, cfg.arch
    _builder(arch)
    if arch == "fcn":
        if enc not in FCN_ENCODERS:
            raise ValueError(
                f"encoder: arch 'fcn' takes a torchvision ResNet, got {enc!r}; "
                f"valid: {', '.join(sorted(FCN_ENCODERS))}"
            )
        return
    if arch == "maskrcnn":
        if enc not in MASKRCNN_ENCODERS:
            raise ValueError(
                f"encoder: arch 'maskrcnn' takes a torchvision MobileNetV2 backbone (the one "
                f"with offline ImageNet weights), got {enc!r}; valid: "
                f"{', '.join(sorted(MASKRCNN_ENCODERS))}"
            )
        return
    smp_names, timm_names = _encoder_names()
    timm_ok = enc.startswith("tu-") and enc.removeprefix("tu-").split(".")[0] in timm_names
    if arch == "dpt" and not timm_ok:
        raise ValueError(
            f"encoder: arch 'dpt' needs a ViT-style timm encoder "
            f"('tu-<timm model>', e.g. tu-vit_tiny_patch16_224), got {enc!r}"
        )
    if enc not in smp_names and not timm_ok:
        pool = [f"tu-{n}" for n in timm_names] if enc.startswith("tu-") else smp_names
        close = difflib.get_close_matches(enc, pool, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "no close match"
        raise ValueError(
            f"encoder: unknown encoder {enc!r}; {len(smp_names)} smp encoders are "
            f"valid (segmentation_models_pytorch.encoders.get_encoder_names()), or "
            f"'tu-<name>' for any of {len(timm_names)} timm models; {hint}"
        )
    if arch == "dpt":
        patch = _timm_reduction(enc)
        if patch & (patch - 1):
            raise ValueError(
                f"encoder: arch 'dpt' needs a power-of-two patch size (8, 16, 32); "
                f"{enc!r} reduces by {patch}"
            )


def required_stride(cfg: TrialConfig) -> int:
    """The multiple that input H and W must be (measured per arch; see tests/test_models.py)."""
    _builder(cfg.arch)
    if cfg.arch in INSTANCE_ARCHS:  # pads each batch to a multiple of 32 itself, with zeros
        return 1
    full = 2**cfg.encoder_depth
    if cfg.arch == "dpt":  # decoder reassembles features at 1/4 ... 1/2**(depth+1)
        return max(_timm_reduction(cfg.encoder), 2 * full)
    if cfg.arch == "fcn":
        return min(8, full) if cfg.encoder in _DILATED else full
    if cfg.arch in _DEFAULT_OUTPUT_STRIDE:
        return min(cfg.output_stride or _DEFAULT_OUTPUT_STRIDE[cfg.arch], full)
    if cfg.arch == "pan":
        return min(_PAN_STRIDE, full)
    return full


def min_input_size(cfg: TrialConfig) -> int:
    """Smallest H and W the model accepts (PAN max-pools its deepest map 3 more times)."""
    if cfg.arch in INSTANCE_ARCHS:
        return MIN_INPUT
    stride = required_stride(cfg)
    return 8 * stride if cfg.arch == "pan" else stride


def min_batch_size(cfg: TrialConfig) -> int:
    """Smallest training batch per worker (BatchNorm after global pooling needs 2)."""
    _builder(cfg.arch)
    return 2 if cfg.arch in _BATCH_STATS else 1


def unused_parameters(model: nn.Module, cfg: TrialConfig) -> list[str]:
    """Parameters that get no gradient from a forward/backward on a (2, 1, S, S) batch
    (maskrcnn: a training step with one particle per image)."""
    import torch

    if cfg.arch in INSTANCE_ARCHS:
        return maskrcnn_unused_parameters(getattr(model, "module", model))

    size, training = min_input_size(cfg), model.training
    model.eval()  # same graph as training, but BatchNorm running statistics stay untouched
    model.zero_grad(set_to_none=True)
    model(torch.zeros(2, 1, size, size)).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(training)
    return unused


def check_input_size(cfg: TrialConfig) -> None:
    """Raise ValueError if ``cfg.tile_size`` is not a valid input size for the model."""
    stride, low, tile = required_stride(cfg), min_input_size(cfg), cfg.tile_size
    if tile % stride == 0 and tile >= low:
        return
    nearest = sorted({max(low, tile // stride * stride), max(low, -(-tile // stride) * stride)})
    extra = f", output_stride={cfg.output_stride}" if cfg.output_stride else ""
    raise ValueError(
        f"tile_size: arch {cfg.arch!r} with encoder {cfg.encoder!r} "
        f"(encoder_depth={cfg.encoder_depth}{extra}) needs a multiple of {stride}"
        f"{f' of at least {low}' if low > stride else ''}, got {tile}; nearest "
        f"valid: {' or '.join(map(str, nearest))}"
    )


def weights_normalization(cfg: TrialConfig) -> tuple[float, float] | None:
    """(mean, std) the encoder's weights expect, or None for random init (use the fingerprint).

    A .pth file is taken to hold ImageNet weights of ``cfg.encoder``.
    """
    if cfg.encoder_weights is None:
        return None
    if cfg.encoder_weights == "imagenet-offline":
        return offline_entry(cfg.encoder).normalization
    return pretrained_normalization(cfg.encoder)


def check_weights_available(cfg: TrialConfig) -> None:
    """Fail here, before any Ray worker starts, when ``cfg.encoder_weights`` cannot be had:
    the offline cache lacks the file, the hub is unreachable or HF_HUB_OFFLINE is set for
    'imagenet', or a .pth is missing, damaged or no state dict. Loads what the workers will
    (for 'imagenet' with a reachable hub that fills its cache, which they then reuse)."""
    if cfg.encoder_weights is None:
        return
    if cfg.encoder_weights != "imagenet":
        read_encoder_weights(cfg)  # what the workers will load
        return
    import segmentation_models_pytorch as smp

    check_encoder(cfg)
    try:
        if cfg.encoder.startswith("tu-"):
            import timm

            timm.create_model(cfg.encoder[3:], pretrained=True, features_only=True)
        else:
            smp.encoders.get_encoder(cfg.encoder, in_channels=3, weights="imagenet")
    except (OSError, RuntimeError) as exc:  # huggingface_hub's and urllib's errors
        raise WeightsUnavailableError(hub_unavailable_message(cfg, exc)) from exc


def build_model(cfg: TrialConfig) -> nn.Module:
    """The model for ``cfg``: (N, 1, H, W) -> raw logits (N, cfg.classes, H, W), weights loaded."""
    builder = _builder(cfg.arch)
    if cfg.output_stride is not None and cfg.arch not in _DEFAULT_OUTPUT_STRIDE:
        raise ValueError(
            f"output_stride: only {', '.join(sorted(_DEFAULT_OUTPUT_STRIDE))} take "
            f"an output stride, got output_stride={cfg.output_stride} for arch "
            f"{cfg.arch!r}; set it to null"
        )
    check_encoder(cfg)
    if cfg.encoder_weights == "imagenet-offline":
        offline_entry(cfg.encoder)  # fail before building
    try:
        model = builder(cfg)
    except OSError as exc:  # huggingface_hub's errors (offline, unreachable) are OSErrors
        if cfg.encoder_weights != "imagenet":
            raise
        raise WeightsUnavailableError(hub_unavailable_message(cfg, exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:  # smp/timm reject the combination
        hint = " (DPT needs a ViT-style timm encoder)" if cfg.arch == "dpt" else ""
        raise ValueError(
            f"arch {cfg.arch!r} cannot use encoder {cfg.encoder!r} with "
            f"encoder_depth={cfg.encoder_depth}{hint}: {exc}"
        ) from exc
    if cfg.encoder_weights not in (None, "imagenet") and cfg.arch not in INSTANCE_ARCHS:
        apply_encoder_weights(model, cfg)  # maskrcnn loads its backbone's weights itself
    return model
