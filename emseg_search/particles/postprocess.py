"""From a model's outputs to particles, for every target (TrialConfig.target).

The one place where outputs become a particle mask and instances: training-time validation,
`evaluate`, `predict` and the export recipe all go through a ``PostProcess``, whose few
parameters are recorded in the model artifact (``artifact.json``: ``postprocess``).

Outputs are logits (C, H, W) (or batches (N, C, H, W)) at the image's resolution:

- ``binary`` (C = 1): mask = sigmoid > threshold; particles are its 4-connected components,
  cut where they touch by the distance-transform watershed of ``labelling.label_particles``
  (``split_touching``);
- ``boundary`` (C = 3, softmax: background, interior, boundary): mask = P(interior) +
  P(boundary) > threshold; seeds are the 4-connected regions where P(interior) >
  ``seed_threshold``; a watershed of P(boundary) - P(interior) grows them over the mask;
- ``distance`` (C = 2, sigmoids: mask, normalised distance to the boundary): mask as binary;
  seeds where the predicted distance > ``seed_threshold`` (particle cores); a watershed of
  the negative distance grows them over the mask;
- ``instances`` (C = 3, Mask R-CNN: particle logit, instance id, detection score; see
  ``models.maskrcnn.detections_to_maps``, which pastes each detection's mask and gives
  overlapping pixels to the higher score): particles are the model's own instances whose
  detection scores at least ``score_threshold``, restricted to the mask (particle logit >
  logit(threshold)); no watershed. The model applies its mask threshold (the config's
  ``threshold``) when it pastes masks and drops detections below the config's
  ``score_threshold`` before its mask head, so only higher thresholds change them here.

A mask component without any seed (a particle too small for a core) is a particle of its own;
particles smaller than ``min_area`` px are dropped (the specks a network leaves), and with
``min_relative_area`` > 0 also those smaller than that fraction of the image's area-weighted
median particle area (the area of the particle holding the median particle pixel): the panel
letters, scale-bar ticks and specks a network marks beside a few large particles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from emseg_search.config import TARGET_CHANNELS, TrialConfig
from emseg_search.particles.labelling import drop_small, label_particles

_NOT_PARTICLE = 20.0  # instances: the particle logit of a weak detection's pixel is at most -it


@dataclass(frozen=True)
class PostProcess:
    """How a model's outputs become a mask and particles (see the module docstring)."""

    target: str = "binary"
    threshold: float = 0.5  # probability of "particle" above which a pixel is foreground
    seed_threshold: float = 0.5  # boundary / distance: what seeds the watershed
    split_touching: bool = True  # binary: watershed-split touching particles
    min_area: int = 4  # px; smaller particles are dropped
    score_threshold: float = 0.5  # instances: detections scoring less are not particles
    min_relative_area: float = 0.0  # drop particles < it x the area-weighted median area

    def __post_init__(self) -> None:
        if self.target not in TARGET_CHANNELS:
            raise ValueError(
                f"unknown target {self.target!r}; valid targets: {sorted(TARGET_CHANNELS)}"
            )
        for name in ("threshold", "seed_threshold", "score_threshold"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"`{name}` must lie in (0, 1), got {value}")
        if self.min_area < 0:
            raise ValueError(f"`min_area` must be >= 0, got {self.min_area}")
        if not 0.0 <= self.min_relative_area < 1.0:
            raise ValueError(
                f"`min_relative_area` must lie in [0, 1), got {self.min_relative_area}"
            )

    @classmethod
    def of(cls, cfg: TrialConfig, split_touching: bool = True) -> PostProcess:
        """The post-processing of a model trained with ``cfg``."""
        return cls(
            cfg.target,
            cfg.threshold,
            cfg.seed_threshold,
            split_touching,
            score_threshold=cfg.score_threshold,
            min_relative_area=cfg.min_relative_area,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what artifact.json records; score_threshold for instances only)."""
        out = asdict(self)
        if self.target != "instances":
            del out["score_threshold"]
        return out

    @property
    def resize_mode(self) -> str:
        """How outputs are resized to the image's size: bilinear logits, but nearest for
        instances (instance ids must not blend)."""
        return "nearest" if self.target == "instances" else "bilinear"

    @property
    def channels(self) -> int:
        """Output channels of a model of this target."""
        return TARGET_CHANNELS[self.target]

    @property
    def logit_threshold(self) -> float:
        """logit(threshold): a foreground logit above it is a particle pixel."""
        return math.log(self.threshold / (1.0 - self.threshold))

    def foreground_logit(self, outputs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The logit of "particle" (..., 1, H, W) from outputs (..., C, H, W), float32.

        Binary and distance: the first channel; boundary: log(P(interior) + P(boundary)) -
        log P(background), so sigmoid of it is the softmax's particle probability; instances:
        the first channel where the pixel's detection scores at least ``score_threshold``,
        else at most -``_NOT_PARTICLE`` (a weaker detection's pixel is background).
        """
        x = torch.as_tensor(outputs).float()
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ValueError(
                f"target {self.target!r} needs outputs (..., {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if self.target == "boundary":
            return torch.logsumexp(x[..., 1:, :, :], dim=-3, keepdim=True) - x[..., :1, :, :]
        if self.target == "instances":
            logit, score = x[..., :1, :, :], x[..., 2:3, :, :]
            weak = torch.clamp(logit, max=-_NOT_PARTICLE)
            return torch.where(score >= self.score_threshold, logit, weak)
        return x[..., :1, :, :]

    def mask(self, outputs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Particle mask (..., 1, H, W) bool of outputs (..., C, H, W)."""
        return self.foreground_logit(outputs) > self.logit_threshold

    def label_mask(self, mask: np.ndarray) -> np.ndarray:
        """Particles (H, W) int32 of a binary target's particle mask (H, W) bool: its
        components, watershed-split with ``split_touching`` (``label_particles``)."""
        labels = label_particles(mask, split_touching=self.split_touching, min_area=self.min_area)
        return drop_relatively_small(labels, self.min_relative_area)

    def instances(self, outputs: torch.Tensor | np.ndarray) -> np.ndarray:
        """Particles (H, W) int32, ids 1..N, 0 = background, of one image's outputs (C, H, W)."""
        return drop_relatively_small(self._instances(outputs), self.min_relative_area)

    def _instances(self, outputs: torch.Tensor | np.ndarray) -> np.ndarray:
        x = torch.as_tensor(outputs).float()
        if x.dim() != 3:
            raise ValueError(f"expected one image's outputs (C, H, W), got {tuple(x.shape)}")
        fg = self.mask(x)[0].cpu().numpy()
        if self.target == "instances":
            ids = torch.round(x[1]).to(torch.int64).cpu().numpy()
            return drop_small(np.where(fg, ids, 0), self.min_area)
        if self.target == "binary":  # label_mask without its relative filter (applied once)
            return label_particles(fg, split_touching=self.split_touching, min_area=self.min_area)
        if self.target == "boundary":
            p = torch.softmax(x, dim=0).cpu().numpy()
            seeds, surface = p[1] > self.seed_threshold, p[2] - p[1]
        else:
            d = torch.sigmoid(x[1]).cpu().numpy()
            seeds, surface = d > self.seed_threshold, -d
        return seeded_watershed(fg, seeds, surface, self.min_area)


def seeded_watershed(
    fg: np.ndarray, seeds: np.ndarray, surface: np.ndarray, min_area: int = 4
) -> np.ndarray:
    """Particles (H, W) int32 of a mask ``fg`` (H, W) bool: the 4-connected regions of
    ``seeds & fg`` grown over ``fg`` by a watershed of ``surface`` (low first); a mask
    component without a seed is one particle; particles under ``min_area`` px dropped."""
    from skimage.measure import label
    from skimage.segmentation import watershed

    fg = np.asarray(fg, bool)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    markers = label(np.asarray(seeds, bool) & fg, connectivity=1).astype(np.int32)
    components = label(fg, connectivity=1)
    seeded = np.zeros(components.max() + 1, bool)
    seeded[components[markers > 0]] = True
    unseeded = fg & ~seeded[components]
    if unseeded.any():
        extra = label(unseeded, connectivity=1).astype(np.int32)
        markers[extra > 0] = extra[extra > 0] + markers.max()
    labels = watershed(np.asarray(surface, np.float64), markers, mask=fg)
    return drop_small(labels, min_area)


def drop_relatively_small(labels: np.ndarray, fraction: float) -> np.ndarray:
    """``labels`` (H, W) without the particles smaller than ``fraction`` x the image's
    area-weighted median particle area (the area of the particle that holds the median
    particle pixel; robust to many specks beside a few large particles); ids stay 1..N."""
    from emseg_search.data.fingerprint import area_weighted_diameters

    if fraction <= 0 or labels.max() == 0:
        return labels
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    (diameter,) = area_weighted_diameters(areas[areas > 0], [50])
    weighted_median = round(math.pi * diameter**2 / 4)  # the particle's area, an integer
    return drop_small(labels, int(math.ceil(fraction * weighted_median)))
