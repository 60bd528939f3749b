"""Encoder state dicts: key renaming, RGB -> grey first conv, checked loading, input statistics;
``load_tensor_file``, the one way the project reads a .pt/.pth file.

Pure functions over tensors and modules (no cache, no downloads): ``weights`` reads the files,
``models`` builds the networks.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

IMAGENET_GREY = (0.449, 0.226)  # mean of ImageNet's RGB mean/std: the first conv sums over RGB
INCEPTION_GREY = (0.5, 0.5)  # TF-ported weights (EfficientNet-Lite, Inception, ViT augreg)
_HEADS = {"classifier", "fc", "head", "conv_head", "bn2"}  # top-level names of classifier heads
# grey (mean, std) of smp's own hub weights where they are not ImageNet's (smp 0.3 settings)
_SMP_NORMALIZATION = {
    "timm-tf_efficientnet_lite": INCEPTION_GREY,
    "inception": INCEPTION_GREY,
    "xception": INCEPTION_GREY,
    "dpn": (0.451, 0.2348),
}


def from_lukemelas(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename lukemelas EfficientNet(-Lite) keys (`_blocks.N._expand_conv`) to timm's names.

    Flat block N maps to timm's ``blocks.<stage>.<index>``; a stage is a run of consecutive
    blocks with the same output channels (every stage changes them). ``_fc`` -> ``classifier``.
    """
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    layout: list[str] = []
    stage, index, previous = -1, 0, None
    for n in range(n_blocks):
        out = state[f"_blocks.{n}._project_conv.weight"].shape[0]
        stage, index = (stage, index + 1) if out == previous else (stage + 1, 0)
        layout.append(f"blocks.{stage}.{index}")
        previous = out
    # first block of a stage without expansion is timm's DepthwiseSeparableConv
    separable = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    expanded = {int(k.split(".")[1]) for k in state if "._expand_conv." in k}
    out_state: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            n = int(m[1])
            table = inverted if n in expanded else separable
            out_state[f"{layout[n]}.{table[m[2]]}.{m[3]}"] = value
        else:
            module, rest = key.split(".", 1)
            out_state[f"{top[module]}.{rest}"] = value
    return out_state


def sum_rgb_first_conv(state: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """RGB conv weights (O, 3, k, k) -> (O, 1, k, k) where the model takes 1 channel.

    timm's ``adapt_input_conv`` sums over the RGB axis for one input channel, as smp does
    for its own pretrained encoders; only convs whose target has 1 input channel change.
    """
    from timm.models import adapt_input_conv

    out = dict(state)
    for key, value in state.items():
        mine = own.get(key)
        if (
            mine is not None
            and value.ndim == 4
            and mine.ndim == 4
            and value.shape[1] == 3
            and mine.shape[1] == 1
            and value.shape[0] == mine.shape[0]
        ):
            out[key] = adapt_input_conv(1, value)
    return out


def load_state_into(
    encoder: nn.Module, state: dict[str, Tensor], source: str, truncated: bool = False
) -> list[str]:
    """Load ``state`` into ``encoder``; every encoder tensor must be covered, or ValueError.

    Keys of modules the encoder lacks are ignored when they are a classifier head, or, with
    ``truncated`` (encoder_depth < 5), any missing module (stages cut off by the depth).
    Returns the ignored keys.
    """
    own = encoder.state_dict()
    state = sum_rgb_first_conv(state, own)
    modules = {name for name, _ in encoder.named_modules()}

    def ignorable(key: str) -> bool:
        module = key.rsplit(".", 1)[0]
        top = module.removeprefix("model.").split(".")[0]
        return module not in modules and (truncated or top in _HEADS)

    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(k for k in state.keys() - own.keys() if not ignorable(k))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} != model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{source}: the weights do not fit the encoder"]
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        ):
            if keys:
                more = f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                lines.append(f"  {len(keys)} {what}: {', '.join(keys[:8])}{more}")
        raise ValueError("\n".join(lines))
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return sorted(state.keys() - own.keys())


class TensorFileError(ValueError):
    """A .pt/.pth file refused (it holds pickled objects that could run code) or unreadable."""


def load_tensor_file(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """The tensors and plain containers of a torch file, loaded with ``weights_only=True``:
    weights, checkpoints and artifacts may come from a shared bucket, and a pickle can run
    code. TensorFileError naming the file when it holds anything else, or is damaged."""
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's refusal of a pickled reference to Python code ("unsupported GLOBAL x.y")
        names = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if names:
            raise TensorFileError(
                f"{path}: refused: it holds pickled Python objects, not only tensors, and "
                f"loading it could run code ({names[0]}). Load only files you trust; re-save "
                "trusted weights with torch.save(model.state_dict(), ...)"
            ) from None
        damage: BaseException = exc
    except Exception as exc:  # torch raises many types for a damaged file
        damage = exc
    raise TensorFileError(
        f"{path}: not a readable torch file (truncated or damaged?): {_first_line(damage)}"
    )


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name."""
    return (str(exc).splitlines() or [""])[0] or type(exc).__name__


def read_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pth (plain, or wrapped as {'state_dict': ...} / {'model': ...})."""
    try:
        state = load_tensor_file(path)
    except TensorFileError as exc:
        raise ValueError(f"encoder_weights: {exc}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"encoder_weights: {path} holds no state dict of tensors")
    return state


def pretrained_normalization(encoder: str) -> tuple[float, float]:
    """Grey (mean, std) for ImageNet weights of ``encoder``: the mean of their RGB statistics."""
    if encoder.startswith("tu-"):
        import timm

        pretrained = timm.models.get_pretrained_cfg(encoder.removeprefix("tu-"))
        if pretrained is not None:
            return (round(sum(pretrained.mean) / 3, 4), round(sum(pretrained.std) / 3, 4))
    for prefix, stats in _SMP_NORMALIZATION.items():
        if encoder.startswith(prefix):
            return stats
    return IMAGENET_GREY
