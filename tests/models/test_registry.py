"""models: every registered architecture trains one step; input-size rules; error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emseg_search.config import INSTANCE_ARCHS, TrialConfig
from emseg_search.models.pretrained import OFFLINE_ENCODERS, WeightsUnavailableError
from emseg_search.models.registry import (
    ARCHITECTURES,
    FCN_ENCODERS,
    build_model,
    check_encoder,
    check_input_size,
    min_batch_size,
    min_input_size,
    required_stride,
    unused_parameters,
    weights_normalization,
)

# the smallest encoder each architecture accepts offline (encoder_weights=None)
TINY = {"dpt": "tu-vit_tiny_patch16_224", "maskrcnn": "mobilenet_v2"}
# the architectures whose outputs are logit maps; the instance model (maskrcnn) trains on
# instance maps and is tested in test_maskrcnn.py
SEMANTIC = sorted(a for a in ARCHITECTURES if a not in INSTANCE_ARCHS)
_MODELS: dict[TrialConfig, torch.nn.Module] = {}
pytestmark = pytest.mark.filterwarnings("ignore:`timm-` encoders are deprecated")


def cfg_for(arch: str, **kw: object) -> TrialConfig:
    """A TrialConfig for ``arch`` with its tiny offline encoder."""
    return TrialConfig(arch=arch, encoder=TINY.get(arch, "resnet18"), **kw)


def built(cfg: TrialConfig) -> torch.nn.Module:
    """build_model(cfg), built once per test session (building dominates the test time)."""
    if cfg not in _MODELS:
        torch.manual_seed(0)
        _MODELS[cfg] = build_model(cfg)
    return _MODELS[cfg]


def valid_size(cfg: TrialConfig, at_least: int = 64) -> int:
    """The smallest multiple of the required stride that is >= at_least and accepted."""
    stride = required_stride(cfg)
    low = max(at_least, min_input_size(cfg))
    return -(-low // stride) * stride


@pytest.mark.parametrize("arch", SEMANTIC)
def test_every_architecture_trains_one_step(arch: str) -> None:
    """(2, 1, H, W) -> logits (2, 1, H, W); backward gives finite gradients."""
    cfg = cfg_for(arch)
    model = built(cfg).train()
    size = valid_size(cfg)
    x = torch.randn(2, 1, size, size)
    y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 1, size, size)
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("depth", [3, 5])
@pytest.mark.parametrize("arch", SEMANTIC)
def test_required_stride_holds(arch: str, depth: int) -> None:
    """Multiples of required_stride give (H, W) logits, down to the smallest accepted width.

    Other sizes are the predictor's job (it pads to the stride: tests/inference/
    test_predictor.py runs a 157x203 image), so no test here depends on what smp does then.
    """
    cfg = cfg_for(arch, encoder_depth=depth)
    model = built(cfg).eval()
    stride, height = required_stride(cfg), valid_size(cfg)
    with torch.no_grad():
        for width in (valid_size(cfg, 1), valid_size(cfg, 1) + stride):
            assert model(torch.randn(1, 1, height, width)).shape == (1, 1, height, width)


@pytest.mark.parametrize(
    ("kw", "stride", "low"),
    [
        ({"arch": "unet"}, 32, 32),
        ({"arch": "unet", "encoder_depth": 3}, 8, 8),
        ({"arch": "fpn", "encoder_depth": 4}, 16, 16),
        ({"arch": "deeplabv3"}, 8, 8),
        ({"arch": "deeplabv3plus"}, 16, 16),
        ({"arch": "deeplabv3plus", "output_stride": 8}, 8, 8),
        ({"arch": "deeplabv3plus", "encoder_depth": 3}, 8, 8),
        ({"arch": "pan"}, 16, 128),
        ({"arch": "pan", "encoder_depth": 3}, 8, 64),
        ({"arch": "dpt", "encoder": "tu-vit_tiny_patch16_224", "encoder_depth": 4}, 32, 32),
        ({"arch": "dpt", "encoder": "tu-vit_base_patch32_224", "encoder_depth": 3}, 32, 32),
        ({"arch": "fcn"}, 32, 32),
        ({"arch": "fcn", "encoder": "resnet50"}, 8, 8),
    ],
)
def test_required_stride_table(kw: dict, stride: int, low: int) -> None:
    cfg = TrialConfig(**kw)
    assert (required_stride(cfg), min_input_size(cfg)) == (stride, low)


def test_check_input_size_suggests_nearest_sizes() -> None:
    check_input_size(TrialConfig(tile_size=256))
    with pytest.raises(ValueError, match=r"tile_size: .*multiple of 32, got 100; .*96 or 128"):
        check_input_size(TrialConfig(tile_size=100))
    with pytest.raises(ValueError, match=r"multiple of 16 of at least 128, got 64; .*: 128$"):
        check_input_size(TrialConfig(arch="pan", tile_size=64))


def test_min_batch_size_is_real() -> None:
    """Archs that pool to 1x1 before BatchNorm cannot train on a batch of one."""
    cfg = cfg_for("deeplabv3plus")
    assert min_batch_size(cfg) == 2 and min_batch_size(cfg_for("unet")) == 1
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        built(cfg).train()(torch.randn(1, 1, 64, 64))


def test_unused_parameters_are_the_cut_off_stages() -> None:
    """Why DDP needs find_unused_parameters=True for encoder_depth < 5 (but not for fcn)."""
    assert unused_parameters(built(cfg_for("unet")), cfg_for("unet")) == []
    shallow = cfg_for("unet", encoder_depth=3)
    cut = unused_parameters(built(shallow), shallow)
    assert cut and all(n.startswith(("encoder.layer3.", "encoder.layer4.")) for n in cut)
    shallow = cfg_for("fcn", encoder_depth=3)
    assert unused_parameters(built(shallow), shallow) == []


def test_fcn_returns_a_tensor_and_exposes_its_encoder() -> None:
    model = built(cfg_for("fcn"))
    assert hasattr(model, "encoder") and model.encoder is model.fcn.backbone
    assert model.encoder.conv1.in_channels == 1


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"arch": "Unet"}, r"arch: unknown architecture 'Unet'; valid: deeplabv3, .*, upernet"),
        ({"encoder": "resnet81"}, r"encoder: unknown .*\d+ smp encoders.*close matches: resnet18"),
        ({"encoder": "tu-convnext_tinny"}, r"\d+ timm models; close matches: tu-convnext_tiny"),
        ({"arch": "dpt", "encoder": "resnet18"}, r"'dpt' needs a ViT-style timm encoder"),
        ({"arch": "dpt", "encoder": "tu-resnet18"}, r"DPT needs a ViT-style timm encoder"),
        ({"arch": "fcn", "encoder": "mobilenet_v2"}, r"valid: resnet101, resnet18, resnet34"),
        ({"output_stride": 16}, r"output_stride: only deeplabv3, deeplabv3plus .*'unet'"),
        ({"arch": "linknet", "encoder": "mit_b0"}, r"'linknet' cannot use encoder 'mit_b0'"),
        ({"encoder_weights": "imagenet-offline"}, r"exist for: mobilenet_v2, timm-tf_eff"),
        ({"encoder_weights": "no/such.pth"}, r"encoder_weights: '/.*/no/such.pth' is none of"),
    ],
)
def test_errors_name_the_field_and_the_choices(kw: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(TrialConfig(**kw))


def test_check_encoder_accepts_every_fcn_and_offline_encoder() -> None:
    for encoder in FCN_ENCODERS:
        check_encoder(TrialConfig(arch="fcn", encoder=encoder))
    for encoder in OFFLINE_ENCODERS:
        check_encoder(TrialConfig(encoder=encoder))


def test_imagenet_without_hub_says_use_imagenet_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub read it at import (conftest)
    with pytest.raises(WeightsUnavailableError, match=r"HF_HUB_OFFLINE=1.*'imagenet-offline'"):
        build_model(TrialConfig(encoder="resnet18", encoder_weights="imagenet"))


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ("imagenet", WeightsUnavailableError, r"HF_HUB_OFFLINE=1.*'imagenet-offline'"),
        ("imagenet-offline", WeightsUnavailableError, r"weights fetch --encoder mobilenet_v2"),
        ("missing.pth", ValueError, r"missing\.pth' is none of null"),
        ("junk.pth", ValueError, r"junk\.pth: not a readable torch file"),
    ],
)
def test_unavailable_weights_fail_the_driver_check(
    weights: str,
    error: type[Exception],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check_weights_available runs on the driver before Ray: each way weights can be missing
    is one error naming what to do, not a worker's traceback."""
    from emseg_search.models.registry import check_weights_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EMSEG_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pth").write_text("not a state dict")
    with pytest.raises(error, match=message):
        check_weights_available(TrialConfig(encoder="mobilenet_v2", encoder_weights=weights))
    check_weights_available(TrialConfig(encoder="mobilenet_v2", encoder_weights=None))


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),
        ({"encoder_weights": "imagenet"}, (0.449, 0.226)),
        ({"encoder": "mobilenet_v2", "encoder_weights": "imagenet-offline"}, (0.449, 0.226)),
        ({"encoder": "timm-tf_efficientnet_lite0", "encoder_weights": "imagenet"}, (0.5, 0.5)),
        (
            {"encoder": "tu-tf_efficientnet_lite2", "encoder_weights": "imagenet-offline"},
            (0.5, 0.5),
        ),
        ({"encoder": "tu-convnext_atto", "encoder_weights": "imagenet"}, (0.449, 0.226)),
        (
            {"arch": "dpt", "encoder": "tu-vit_tiny_patch16_224", "encoder_weights": "imagenet"},
            (0.5, 0.5),
        ),
    ],
)
def test_weights_normalization_follows_the_weights(kw: dict, expected: tuple | None) -> None:
    assert weights_normalization(TrialConfig(**kw)) == expected
