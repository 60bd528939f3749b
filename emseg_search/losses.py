"""Loss registry for binary segmentation on logits: base smp losses and weighted pairs "a+b".

Every loss takes logits (N, 1, H, W) and float targets (N, 1, H, W) in {0, 1} and returns a
scalar. The base losses are smp's, unchanged; ``build_loss("a+b", w)`` is ``w*a + (1-w)*b``.

Conventions inherited from smp (binary mode, statistics pooled over the whole batch): dice,
jaccard and tversky are 0 for a batch with no foreground pixel at all, whatever the prediction
(the score is undefined there); pair them with bce or focal so empty batches still teach
something. lovasz (batch-level hinge) and mcc stay finite on empty targets.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from emseg_search.config import TrialConfig

BINARY = smp_losses.BINARY_MODE


class SigmoidInput(nn.Module):
    """Adapter for a loss that expects probabilities: applies sigmoid to logits (N, 1, H, W)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of sigmoid(logits) (N, 1, H, W) against target (N, 1, H, W) -> scalar."""
        return self.loss(logits.sigmoid(), target)


def _mcc() -> nn.Module:
    """smp's MCCLoss takes probabilities, not logits."""
    return SigmoidInput(smp_losses.MCCLoss())


def _focal(*, focal_gamma: float) -> nn.Module:
    """smp's binary focal loss on logits with focusing exponent ``focal_gamma``."""
    return smp_losses.FocalLoss(mode=BINARY, gamma=focal_gamma)


def _tversky(*, tversky_alpha: float, tversky_beta: float) -> nn.Module:
    """smp's binary Tversky loss on logits; alpha weighs false positives, beta false negatives
    (the defaults, 0.3/0.7, favour recall of small particles)."""
    return smp_losses.TverskyLoss(
        mode=BINARY, from_logits=True, alpha=tversky_alpha, beta=tversky_beta
    )


# name -> factory of a fresh module; all take logits. A factory's keywords are TrialConfig
# fields (listed in LOSS_OPTIONS), which build_loss passes on.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": smp_losses.SoftBCEWithLogitsLoss,
    "dice": partial(smp_losses.DiceLoss, mode=BINARY, from_logits=True),
    "focal": _focal,
    "jaccard": partial(smp_losses.JaccardLoss, mode=BINARY, from_logits=True),
    "lovasz": partial(smp_losses.LovaszLoss, mode=BINARY, per_image=False, from_logits=True),
    "mcc": _mcc,
    "tversky": _tversky,
}
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "focal": ("focal_gamma",),
    "tversky": ("tversky_alpha", "tversky_beta"),
}

# The pairs worth searching over: a region/overlap term plus a pixel-wise term.
COMBINATIONS: tuple[str, ...] = (
    "dice+bce",
    "jaccard+bce",
    "lovasz+bce",
    "tversky+bce",
    "focal+dice",
    "focal+tversky",
)

LOSS_NAMES: tuple[str, ...] = (*sorted(LOSSES), *COMBINATIONS)


class WeightedSum(nn.Module):
    """``weight * first + (1 - weight) * second`` of two losses on logits (N, 1, H, W)."""

    def __init__(self, first: nn.Module, second: nn.Module, weight: float) -> None:
        super().__init__()
        self.first, self.second, self.weight = first, second, float(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of both losses for logits and target (N, 1, H, W) -> scalar."""
        return self.weight * self.first(logits, target) + (1.0 - self.weight) * self.second(
            logits, target
        )

    def extra_repr(self) -> str:
        """Show the weight in the module's repr."""
        return f"weight={self.weight}"


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown loss {name!r}; valid base losses: {sorted(LOSSES)}, or a pair 'a+b' of two "
        f"different base losses (weight*a + (1-weight)*b), e.g. {list(COMBINATIONS)}"
    )


def _base(name: str, options: dict[str, float]) -> nn.Module:
    """A fresh base loss ``name`` given the options its factory takes."""
    return LOSSES[name](**{k: options[k] for k in LOSS_OPTIONS.get(name, ())})


def build_loss(
    name: str,
    weight: float = 0.5,
    *,
    focal_gamma: float = 2.0,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
) -> nn.Module:
    """Loss module for logits (N, 1, H, W) vs targets (N, 1, H, W); "a+b" -> w*a + (1-w)*b.

    ``weight`` only applies to pairs (it is TrialConfig.loss_weight) and must lie in [0, 1];
    the keyword options are the TrialConfig fields of the same name (defaults equal theirs)
    and reach the losses that use them, alone or in a pair.
    """
    options = {
        "focal_gamma": focal_gamma,
        "tversky_alpha": tversky_alpha,
        "tversky_beta": tversky_beta,
    }
    parts = [p.strip() for p in name.split("+")]
    if len(parts) == 1:
        if parts[0] not in LOSSES:
            raise _unknown(name)
        return _base(parts[0], options)
    if len(parts) != 2 or any(p not in LOSSES for p in parts) or parts[0] == parts[1]:
        raise _unknown(name)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"loss weight must lie in [0, 1], got {weight}")
    return WeightedSum(_base(parts[0], options), _base(parts[1], options), weight)


def build_trial_loss(cfg: TrialConfig) -> nn.Module:
    """The loss a TrialConfig asks for: ``cfg.loss`` with its weight and every loss option."""
    return build_loss(
        cfg.loss,
        cfg.loss_weight,
        focal_gamma=cfg.focal_gamma,
        tversky_alpha=cfg.tversky_alpha,
        tversky_beta=cfg.tversky_beta,
    )
