"""Loss registry for segmentation on logits: base smp losses and weighted pairs "a+b".

Every binary loss takes logits (N, 1, H, W) and float targets (N, 1, H, W) in {0, 1} and
returns a scalar. The base losses are smp's, unchanged; ``build_loss("a+b", w)`` is
``w*a + (1-w)*b``. ``build_loss(..., mode="multiclass")`` builds the same names in smp's
multiclass mode (logits (N, K, H, W) against class ids (N, H, W); ``bce`` is cross-entropy
there; mcc has no multiclass mode). ``build_trial_loss`` gives each target of
TrialConfig.target its loss (``TargetLoss`` for boundary and distance).

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
MULTICLASS = smp_losses.MULTICLASS_MODE


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
# The same names in smp's multiclass mode (logits (N, K, H, W), class ids (N, H, W)).
MULTICLASS_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": partial(smp_losses.SoftCrossEntropyLoss, smooth_factor=0.0),
    "dice": partial(smp_losses.DiceLoss, mode=MULTICLASS, from_logits=True),
    "focal": lambda *, focal_gamma: smp_losses.FocalLoss(mode=MULTICLASS, gamma=focal_gamma),
    "jaccard": partial(smp_losses.JaccardLoss, mode=MULTICLASS, from_logits=True),
    "lovasz": partial(smp_losses.LovaszLoss, mode=MULTICLASS, per_image=False, from_logits=True),
    "tversky": lambda *, tversky_alpha, tversky_beta: smp_losses.TverskyLoss(
        mode=MULTICLASS, from_logits=True, alpha=tversky_alpha, beta=tversky_beta
    ),
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


def _base(name: str, options: dict[str, float], mode: str = BINARY) -> nn.Module:
    """A fresh base loss ``name`` (in smp's ``mode``) given the options its factory takes."""
    if mode == MULTICLASS and name not in MULTICLASS_LOSSES:
        raise ValueError(
            f"loss {name!r} has no multiclass mode in smp; valid: {sorted(MULTICLASS_LOSSES)}"
        )
    factory = MULTICLASS_LOSSES[name] if mode == MULTICLASS else LOSSES[name]
    return factory(**{k: options[k] for k in LOSS_OPTIONS.get(name, ())})


def build_loss(
    name: str,
    weight: float = 0.5,
    *,
    focal_gamma: float = 2.0,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
    mode: str = BINARY,
) -> nn.Module:
    """Loss module for logits (N, 1, H, W) vs targets (N, 1, H, W); "a+b" -> w*a + (1-w)*b.

    ``weight`` only applies to pairs (it is TrialConfig.loss_weight) and must lie in [0, 1];
    the keyword options are the TrialConfig fields of the same name (defaults equal theirs)
    and reach the losses that use them, alone or in a pair. ``mode="multiclass"``: logits
    (N, K, H, W) vs class ids (N, H, W) long.
    """
    if mode not in (BINARY, MULTICLASS):
        raise ValueError(f"mode must be {BINARY!r} or {MULTICLASS!r}, got {mode!r}")
    options = {
        "focal_gamma": focal_gamma,
        "tversky_alpha": tversky_alpha,
        "tversky_beta": tversky_beta,
    }
    parts = [p.strip() for p in name.split("+")]
    if len(parts) == 1:
        if parts[0] not in LOSSES:
            raise _unknown(name)
        return _base(parts[0], options, mode)
    if len(parts) != 2 or any(p not in LOSSES for p in parts) or parts[0] == parts[1]:
        raise _unknown(name)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"loss weight must lie in [0, 1], got {weight}")
    return WeightedSum(_base(parts[0], options, mode), _base(parts[1], options, mode), weight)


class TargetLoss(nn.Module):
    """The loss of an instance-aware target: (1 - w) * particle-mask loss + w * instance loss.

    boundary: logits (N, 3, H, W) vs class ids (N, 1, H, W) 0/1/2; the mask term is the binary
    loss of the particle logit log(P(interior) + P(boundary)) - log P(background) (what
    particles.postprocess thresholds) against ids > 0, the instance term the multiclass loss.
    distance: logits (N, 2, H, W) vs (N, 2, H, W) [mask, normalised distance]; the mask term
    is the binary loss of channel 0, the instance term smp's soft BCE of channel 1 against
    the distance (a regression to values in [0, 1]).
    """

    def __init__(self, target: str, mask: nn.Module, instance: nn.Module, weight: float) -> None:
        super().__init__()
        if target not in ("boundary", "distance"):
            raise ValueError(f"TargetLoss is for the boundary and distance targets, got {target!r}")
        self.target, self.mask, self.instance, self.weight = target, mask, instance, float(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of both terms for logits (N, C, H, W) and the target -> scalar."""
        if self.target == "boundary":
            particle = torch.logsumexp(logits[:, 1:], dim=1, keepdim=True) - logits[:, :1]
            first = self.mask(particle, (target > 0).to(logits.dtype))
            second = self.instance(logits, target[:, 0].long())
        else:
            first = self.mask(logits[:, :1], target[:, :1])
            second = self.instance(logits[:, 1:], target[:, 1:])
        return (1.0 - self.weight) * first + self.weight * second

    def extra_repr(self) -> str:
        """Show the target and the weight in the module's repr."""
        return f"target={self.target}, weight={self.weight}"


class InstanceLoss(nn.Module):
    """The loss of an instance model (Mask R-CNN): the sum of the losses the model computes
    itself from the targets it is given (``takes_targets``: train.loops.forward_loss)."""

    takes_targets = True

    def forward(self, losses: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Sum of the model's loss dict (RPN objectness and box, ROI class, box and mask)."""
        return torch.stack([v.float() for v in losses.values()]).sum()


def build_trial_loss(cfg: TrialConfig) -> nn.Module:
    """The loss a TrialConfig asks for: ``cfg.loss`` with its weight and every loss option,
    for its target (binary: that loss; boundary and distance: a ``TargetLoss`` whose terms are
    weighted by ``cfg.target_weight``; instances: ``InstanceLoss``, the cfg's loss fields are
    ignored)."""
    if cfg.target == "instances":
        return InstanceLoss()
    options = {
        "focal_gamma": cfg.focal_gamma,
        "tversky_alpha": cfg.tversky_alpha,
        "tversky_beta": cfg.tversky_beta,
    }
    mask = build_loss(cfg.loss, cfg.loss_weight, **options)
    if cfg.target == "binary":
        return mask
    if cfg.target == "boundary":
        instance = build_loss(cfg.loss, cfg.loss_weight, **options, mode=MULTICLASS)
    else:
        instance = smp_losses.SoftBCEWithLogitsLoss()
    return TargetLoss(cfg.target, mask, instance, cfg.target_weight)
