"""Full-resolution inference of a model artifact on micrographs of any size, in bounded memory.

    predictor = Predictor.from_dir("runs/x/model", tile_size=1024, tta=True)
    mask = predictor.predict_mask(read_image("micrograph.tif"))  # bool (H, W)

The intensity path is training's: 8-bit images /255, deeper ones stretched between their own
0.1 and 99.9 percentiles (``to_canonical``), resized by the artifact's scale, normalised
``(x - mean) / std``, padded bottom/right to a multiple of the model's stride (reflection).
An image that fits in one tile at the model's scale then runs whole, exactly as validation
scored it during training. A larger one runs as a sliding window of overlapping tiles that
start on multiples of the stride (so each tile sees the pixel grid the whole image would),
``batch_size`` tiles per forward pass, blended with a Gaussian window (nnU-Net's,
sigma = tile / 8, floored so no pixel gets zero weight) into one float32 logit map the size
of the image: memory is the image plus one batch of tiles, whatever the image size. Logits
come back at the image's original resolution (bilinear, as in training's evaluation).

The working scale is the artifact's by default. ``scale="auto"`` chooses it per image from the
size of the particles a first pass finds (``particle_size``, ``working_scale``): an image whose
particles are smaller or larger, at the model's scale, than most of the training particles'
area, widened by the training augmentation's zoom range (``SizeBand``), runs again at the scale
that brings them into that band; other images keep the first pass, at no extra cost. Particles
below the band are where one target cannot serve every image (docs/robustness.md): real
particles shrunk by a lower magnification want the band's edge, small particles of the kind the
model learned at their own size (its synthetic training images, ``synthetic_size: native``)
want that size, and some images are best left alone. So such an image is predicted at each of
those scales (the model's, the band's lower edge, the synthetic particles' median size when the
model trained on a synthetic mix and that size enlarges the image: particles already below the
band are never shrunk further) and runs at the one whose predicted particles are the most
certain (``particle_entropy``: the lowest mean entropy over the pixels predicted particle).
``scale_tta`` averages the logits of several scales around the working one.

Instance models (Mask R-CNN, target 'instances') run every image whole, at its working scale,
up to ``MAX_INSTANCE_SIDE`` px a side (tile_size does not apply: instances cut by tiles would
have to be merged); their outputs are resized back with nearest-neighbour (instance ids do
not blend), and flip TTA and multi-scale TTA, which average outputs, are refused.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emseg_search.augment import scale_range
from emseg_search.data.datasets import (
    pad_to_input,
    rescale_image,
    scaled_size,
    to_canonical,
    to_float01,
)
from emseg_search.inference.artifact import ArtifactError, ModelArtifact, load_artifact
from emseg_search.models.precision import autocast_dtype
from emseg_search.models.registry import check_input_size, min_input_size, required_stride

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # none, left-right, up-down, both
_SIGMA = 1 / 8  # Gaussian window sigma as a fraction of the tile (nnU-Net's choice)
_FLOOR = 1e-3  # smallest window weight per axis: image corners covered by one tile edge still count
AUTO = "auto"
MIN_PARTICLES = 3  # fewer predicted particles than this: no size estimate, keep the scale
MIN_AREA_PX = 4  # predicted specks smaller than this (px at the working scale) are not particles
SCALE_RANGE = (1 / 8, 4.0)  # the most auto-scale moves away from the model's scale, either way
MAX_WORKING_MEGAPIXELS = 64.0  # auto-scale never enlarges an image beyond this
MAX_SCALE = 16.0  # a fixed working scale is in (0, MAX_SCALE]
SCALE_TTA_RANGE = (0.1, 10.0)  # multi-scale TTA factors lie in this range
# For artifacts whose fingerprint predates area-weighted particle sizes: EMPS's (p25 and p90 of
# its 366 images, rounded), in px of the training images (docs/robustness.md).
FALLBACK_BAND = (90.0, 440.0)
# Largest side (px, at the working scale) an instance model runs on: it runs images whole, and
# its outputs and the detector's feature maps grow with the image (a 4096 x 4096 micrograph
# takes ~2 GB at inference on the CPU).
MAX_INSTANCE_SIDE = 4096


@dataclass(frozen=True)
class Throughput:
    """What a Predictor has done since it was built (or since ``reset_throughput``)."""

    images: int
    megapixels: float  # at the images' original resolution
    windows: int  # model inputs: whole images or tiles (each TTA flip not counted)
    seconds: float  # wall time inside predict_outputs, preprocessing and resizing included

    @property
    def images_per_s(self) -> float:
        """Images per second."""
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def s_per_megapixel(self) -> float:
        """Seconds per megapixel of input image."""
        return self.seconds / self.megapixels if self.megapixels else 0.0


@dataclass(frozen=True)
class SizeBand:
    """Particle sizes a model segments best, as area-weighted median equivalent diameters in
    px of its input: an image whose particles measure less than ``low`` (or more than
    ``high``) at the model's scale runs again at the scale that makes them ``low`` (``high``)."""

    low: float
    high: float

    @classmethod
    def of(cls, artifact: ModelArtifact) -> SizeBand:
        """The band of an artifact: the 25th and 90th area-weighted percentiles of its training
        particles' diameters (fingerprint) at its training scale (EMPS's FALLBACK_BAND for
        artifacts written before the fingerprint had them), widened by the zoom range of its
        training augmentation: a model trained on particles zoomed 0.5-2x has seen them at
        0.5x the 25th to 2x the 90th percentile, and running such images again only hurts."""
        by_area = artifact.fingerprint.particle_diameter_by_area_px
        cfg = artifact.config
        s = float(cfg.scale)
        lo, hi = scale_range(cfg.augment, cfg.augment_strength)
        if by_area is None:
            return cls(FALLBACK_BAND[0] * s * lo, FALLBACK_BAND[1] * s * hi)
        if not 0 < by_area["p25"] <= by_area["p90"]:
            raise ArtifactError(
                f"{artifact.path}: fingerprint.json has no particle sizes (p25 "
                f"{by_area['p25']}, p90 {by_area['p90']}): it cannot choose a scale per image"
            )
        return cls(by_area["p25"] * s * lo, by_area["p90"] * s * hi)


def particle_size(mask: np.ndarray, min_area: float = 1.0) -> tuple[float | None, int]:
    """(area-weighted median equivalent diameter in px, particle count) of the 4-connected
    components of a mask (H, W) of at least ``min_area`` px: the diameter of the particle
    that holds the median foreground pixel, which specks cannot drag down. (None, n) with
    fewer than MIN_PARTICLES."""
    from skimage.measure import label

    from emseg_search.data.fingerprint import area_weighted_diameters

    areas = np.bincount(label(np.asarray(mask, bool), connectivity=1).ravel())[1:]
    areas = areas[areas >= max(min_area, 1.0)]
    if areas.size < MIN_PARTICLES:
        return None, int(areas.size)
    return float(area_weighted_diameters(areas, [50])[0]), int(areas.size)


def working_scale(
    diameter: float | None, scale: float, band: SizeBand, shape: tuple[int, ...] | None = None
) -> float:
    """The scale to run an image at whose particles measure ``diameter`` px (``particle_size``
    at the image's own resolution) when run at ``scale``: ``scale`` without an estimate or
    inside the band, else the scale that brings them to the band's nearer edge, at most
    SCALE_RANGE away and (given the image's ``shape``) MAX_WORKING_MEGAPIXELS large."""
    if diameter is None or band.low <= diameter * scale <= band.high:
        return scale
    edge = band.low if diameter * scale < band.low else band.high
    return scale_for_size(diameter, edge, scale, shape)


def scale_for_size(
    diameter: float, target: float, scale: float, shape: tuple[int, ...] | None = None
) -> float:
    """The scale that makes particles of ``diameter`` px (at the image's own resolution)
    measure ``target`` px, at most SCALE_RANGE away from the model's ``scale`` and (given the
    image's ``shape``) MAX_WORKING_MEGAPIXELS large."""
    lo, hi = SCALE_RANGE
    out = float(np.clip(target / diameter, scale * lo, scale * hi))
    if shape is not None:
        cap = math.sqrt(MAX_WORKING_MEGAPIXELS * 1e6 / (shape[0] * shape[1]))
        out = min(out, max(cap, scale))
    return out


def particle_entropy(logits: np.ndarray, limit: float) -> float:
    """Mean binary entropy (nats) of the particle probability over the pixels whose particle
    ``logits`` exceed ``limit`` (the threshold's logit): how unsure the model is of the
    particles it predicts; inf when it predicts none."""
    x = np.asarray(logits)[np.asarray(logits) > limit].astype(np.float64)
    if x.size == 0:
        return math.inf
    # H(p) = softplus(-x) p + softplus(x) (1 - p) with p = sigmoid(x), stable for any x
    p = 0.5 * (1.0 + np.tanh(0.5 * x))
    return float(np.mean(np.logaddexp(0.0, -x) * p + np.logaddexp(0.0, x) * (1.0 - p)))


def _canonical(image: np.ndarray) -> np.ndarray:
    """One grey image (H, W) on training's intensity path (``to_canonical``); ValueError for
    anything else."""
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected one grey image (H, W), got shape {image.shape}")
    return to_canonical(image)


def tile_origins(length: int, tile: int, overlap: float, stride: int = 1) -> list[int]:
    """Start offsets of ``tile``-px tiles covering ``length`` px, evenly spread (nnU-Net).

    Offsets are multiples of ``stride`` (pass the model's: a CNN is shift-equivariant only
    by multiples of its stride, so tiles then see the pixel grid the whole image would), and
    ``length`` and ``tile`` must be too. Neighbours share at least ``overlap * tile`` px; the
    first tile starts at 0, the last ends at ``length``; ``length <= tile`` gives [0].
    """
    if length <= tile:
        return [0]
    if length % stride or tile % stride:
        raise ValueError(f"length {length} and tile {tile} must be multiples of stride {stride}")
    span = (length - tile) // stride  # in strides
    most = max(1, int(tile * (1.0 - overlap)) // stride)  # largest step keeping the overlap
    n = -(-span // most) + 1
    return [stride * int(i * span / (n - 1) + 0.5) for i in range(n)]


def blend_window(size: int) -> np.ndarray:
    """1-D Gaussian blending weights (size,) float32: 1 at the centre, >= the floor at the ends."""
    centre, sigma = (size - 1) / 2, max(size * _SIGMA, 1e-6)
    w = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
    return np.maximum(w, _FLOOR).astype(np.float32)


class Predictor:
    """Turns grey micrographs (H, W), any dtype, into logits / probabilities / masks (H, W).

    ``tile_size`` (px at the model's scale) must be a multiple of the model's stride and at
    least its minimum input size; images up to that size run whole. ``overlap`` is the
    least fraction of a tile neighbouring tiles share (0 <= overlap < 1). ``tta`` averages the
    LOGITS of the four flips (none, left-right, up-down, both): a flip of the input then
    flips the output, and predict_logits stays a logit map. ``amp`` None follows the
    artifact's training config (mixed precision on GPU only). ``threads`` sets torch's
    process-wide CPU thread count. The model is moved to ``device`` in place.

    ``scale`` is the working scale (the factor images are resized by before the model): None
    is the artifact's; a number fixes another (e.g. the artifact's times your pixel size over
    the training data's); ``"auto"`` chooses one per image (``working_scale``; the last one is
    ``last_scale``). ``scale_tta`` averages the logits of the working scale times each factor,
    e.g. (0.71, 1.0, 1.41).
    """

    def __init__(
        self,
        artifact: ModelArtifact,
        tile_size: int = 1024,
        overlap: float = 0.25,
        tta: bool = False,
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        amp: bool | None = None,
        scale: float | str | None = None,
        scale_tta: Sequence[float] = (1.0,),
    ) -> None:
        cfg = artifact.config
        if isinstance(tile_size, bool) or not isinstance(tile_size, int):
            raise ValueError(f"tile_size must be an integer, got {tile_size!r}")
        check_input_size(cfg.model_copy(update={"tile_size": tile_size}))  # names tile_size
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1) (a fraction of the tile), got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.artifact = artifact
        self.device = torch.device(device)
        self.model = artifact.model.to(self.device).eval()
        self.mean, self.std = artifact.mean, artifact.std
        self.model_scale, self.threshold = float(cfg.scale), artifact.threshold
        self.post = artifact.postprocess  # its target says which output channel is "particle"
        self.auto = scale == AUTO
        if isinstance(scale, str) and not self.auto:
            raise ValueError(f"scale must be a number > 0, None or {AUTO!r}, got {scale!r}")
        if scale is None or self.auto:
            self.scale = self.model_scale
        elif isinstance(scale, bool) or not 0 < float(scale) <= MAX_SCALE:
            raise ValueError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r}")
        else:
            self.scale = float(scale)
        self.band = SizeBand.of(artifact) if self.auto else None
        factors = tuple(float(f) for f in scale_tta)
        lo, hi = SCALE_TTA_RANGE
        if not factors or any(not lo <= f <= hi for f in factors):
            raise ValueError(
                f"scale_tta factors must be in [{lo:g}, {hi:g}], got {list(scale_tta)}"
            )
        self.scale_tta = factors
        self.whole = self.post.target == "instances"  # instance model: whole images only
        if self.whole and (tta or len(factors) > 1):
            raise ValueError(
                f"arch {cfg.arch!r} finds instances, which flip or multi-scale TTA cannot "
                "average: predict without tta and scale_tta"
            )
        self.last_scale = self.scale
        self.stride, self.min_size = required_stride(cfg), min_input_size(cfg)
        self.tile_size, self.overlap, self.batch_size = tile_size, overlap, batch_size
        self.tta = tta
        self.amp_dtype = autocast_dtype(self.device, cfg.amp if amp is None else amp)
        self.reset_throughput()

    @classmethod
    def from_dir(cls, path: str | Path, **options: Any) -> Predictor:
        """Load the artifact folder at ``path`` (see artifact.py); ``options`` as for __init__."""
        return cls(load_artifact(path), **options)

    @property
    def throughput(self) -> Throughput:
        """Images, megapixels, model inputs and seconds so far."""
        return Throughput(self._images, self._megapixels, self._windows, self._seconds)

    def reset_throughput(self) -> None:
        """Start counting ``throughput`` from zero."""
        self._images, self._megapixels, self._windows, self._seconds = 0, 0.0, 0, 0.0

    def scaled_shape(self, shape: tuple[int, ...], scale: float | None = None) -> tuple[int, int]:
        """(H, W) of an image of ``shape`` at ``scale`` (default: the working scale), unpadded."""
        return scaled_size(shape, self.scale if scale is None else scale)

    def prepare(self, image: np.ndarray, scale: float | None = None) -> torch.Tensor:
        """The model input for one grey image (H, W): (1, 1, Hp, Wp) float32 on the device.

        Training's intensity path, at ``scale`` (default: the working scale), normalised,
        reflect-padded bottom/right to a valid input size (a multiple of the stride, >= the
        minimum).
        """
        return self._input(_canonical(image), self.scale if scale is None else scale)

    def _input(self, image: np.ndarray, scale: float) -> torch.Tensor:
        """``prepare`` of an image already ``to_canonical`` (stretched once, not twice)."""
        image = pad_to_input(to_float01(rescale_image(image, scale)), self.stride, self.min_size)
        image = (np.asarray(image, dtype=np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(image)).to(self.device)[None, None]

    def predict_logits(self, image: np.ndarray) -> np.ndarray:
        """Particle logits (H, W) float32 at the original resolution for one grey image (H, W):
        the model's logit for the binary target, the particle logit of its outputs for the
        others (``PostProcess.foreground_logit``)."""
        return self._particle_logit(self.predict_outputs(image))

    def _particle_logit(self, outputs: np.ndarray) -> np.ndarray:
        """Particle logits (H, W) of outputs (C, H, W)."""
        if outputs.shape[0] == 1:
            return outputs[0]
        return self.post.foreground_logit(torch.from_numpy(outputs))[0].numpy()

    def predict_outputs(self, image: np.ndarray) -> np.ndarray:
        """The model's outputs, logits (C, H, W) float32 at the original resolution, for one
        grey image (H, W); C is the artifact's target's channels (1 for binary)."""
        t0 = time.perf_counter()
        image = _canonical(image)
        done: dict[float, np.ndarray] = {}
        scale = self.scale
        if self.auto:
            assert self.band is not None
            done[scale] = first = self._logits_at(image, scale)
            min_area = MIN_AREA_PX / scale**2  # a speck at the working scale, in image px
            mask = self._particle_logit(first) > self._logit_threshold()
            diameter, _ = particle_size(mask, min_area)
            edge = working_scale(diameter, scale, self.band, image.shape)
            if diameter is not None and diameter * scale < self.band.low:
                scale = self._most_certain(image, diameter, edge, done)
            else:
                scale = edge
        total = None
        for f in self.scale_tta:
            s = scale * f
            logits = done[s] if s in done else self._logits_at(image, s)
            total = logits if total is None else total + logits
        assert total is not None
        out = total if len(self.scale_tta) == 1 else total / np.float32(len(self.scale_tta))
        self.last_scale = scale
        self._images += 1
        self._megapixels += image.size / 1e6
        self._seconds += time.perf_counter() - t0
        return out

    def below_band_scales(
        self, diameter: float, edge: float, shape: tuple[int, ...]
    ) -> list[float]:
        """The working scales ``scale="auto"`` tries for an image whose particles measure
        ``diameter`` px, below the band: the model's, the band's lower ``edge`` and, for a
        model trained on a synthetic mix, the one that brings them to its synthetic particles'
        median size (``synthetic_size``) where that is above the model's scale, in that order,
        without repeats."""
        scales = [self.scale, edge]
        if self.synthetic_size is not None:
            synthetic = scale_for_size(diameter, self.synthetic_size, self.scale, shape)
            if synthetic > self.scale:  # never shrink particles that are already small
                scales.append(synthetic)
        return list(dict.fromkeys(scales))

    @functools.cached_property
    def synthetic_size(self) -> float | None:
        """Median diameter (px at the model's input) of the synthetic particles the artifact
        trained on (``synthetic_mix``), None without them; measured on first use (~2 s)."""
        from emseg_search.data.synth.mix import input_particle_size

        return input_particle_size(self.artifact.config)

    def _most_certain(
        self, image: np.ndarray, diameter: float, edge: float, done: dict[float, np.ndarray]
    ) -> float:
        """Of ``below_band_scales``, the one whose predicted particles are the most certain
        (lowest ``particle_entropy``; the earlier on ties), its logits kept in ``done``."""
        limit = self._logit_threshold()
        best, best_h = self.scale, math.inf
        for s in self.below_band_scales(diameter, edge, image.shape):
            if s not in done:
                done[s] = self._logits_at(image, s)
            h = particle_entropy(self._particle_logit(done[s]), limit)
            if h < best_h:
                best, best_h = s, h
        return best

    def _logits_at(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Logits (C, H, W) float32 at the original resolution of a canonical image run at
        ``scale``."""
        x = self._input(image, scale)
        (h, w), (hs, ws) = image.shape, self.scaled_shape(image.shape, scale)
        if self.whole and max(x.shape[-2:]) > MAX_INSTANCE_SIDE:
            raise ValueError(
                f"arch {self.artifact.config.arch!r} runs images whole, up to "
                f"{MAX_INSTANCE_SIDE} px a side at the working scale; this one is "
                f"{hs} x {ws} px at scale {scale:g}: crop it, or lower --scale"
            )
        with torch.inference_mode():
            if self.whole or max(x.shape[-2:]) <= self.tile_size:  # as validation ran it
                logits, windows = self._forward(x)[0], 1
            else:
                logits, windows = self._tiled(x[0, 0])
            logits = logits[:, :hs, :ws]
            if (hs, ws) != (h, w):
                mode = self.post.resize_mode
                corners = {"align_corners": False} if mode == "bilinear" else {}
                logits = F.interpolate(logits[None], size=(h, w), mode=mode, **corners)[0]
            out = logits.contiguous().cpu().numpy()  # not a view of the padded map
        self._windows += windows
        return out

    def _logit_threshold(self, threshold: float | None = None) -> np.float32:
        """logit(t) for the probability threshold t (default: the artifact's)."""
        t = self.threshold if threshold is None else threshold
        if not 0.0 < t < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {t}")
        return np.float32(math.log(t / (1.0 - t)))

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Particle probabilities (H, W) float32 in [0, 1] (sigmoid of predict_logits)."""
        return torch.sigmoid(torch.from_numpy(self.predict_logits(image))).numpy()

    def predict_mask(self, image: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Particle mask (H, W) bool: probability > ``threshold`` (default: the artifact's)."""
        # sigmoid(x) > t  <=>  x > logit(t): the comparison training's evaluate makes
        limit = self._logit_threshold(threshold)
        return self.predict_logits(image) > limit

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Model logits (N, C, h, w) float32 for a normalised batch (N, 1, h, w); TTA-averaged."""
        flips = FLIPS if self.tta else FLIPS[:1]
        total = None
        for dims in flips:
            x = batch.flip(dims) if dims else batch
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                y = self.model(x)
            y = y.float().flip(dims) if dims else y.float()
            total = y if total is None else total + y
        return total if len(flips) == 1 else total / len(flips)

    def _tiled(self, padded: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Gaussian-blended sliding-window logits (C, Hp, Wp) of a prepared image (Hp, Wp)."""
        height, width = padded.shape
        th, tw = min(self.tile_size, height), min(self.tile_size, width)
        ys = tile_origins(height, th, self.overlap, self.stride)
        xs = tile_origins(width, tw, self.overlap, self.stride)
        wy = torch.from_numpy(blend_window(th)).to(self.device)
        wx = torch.from_numpy(blend_window(tw)).to(self.device)
        window = wy[:, None] * wx[None, :]
        channels = self.post.channels
        acc = torch.zeros((channels, height, width), dtype=torch.float32, device=self.device)
        origins = [(y, x) for y in ys for x in xs]
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            batch = torch.stack([padded[y : y + th, x : x + tw] for y, x in chunk])[:, None]
            for (y, x), tile in zip(chunk, self._forward(batch), strict=True):
                acc[:, y : y + th, x : x + tw] += tile * window
        # the window is separable and the origins a grid, so the summed weights are too
        sy = torch.zeros(height, device=self.device)
        sx = torch.zeros(width, device=self.device)
        for y in ys:
            sy[y : y + th] += wy
        for x in xs:
            sx[x : x + tw] += wx
        acc /= sy[:, None]  # in place, row then column: no second image-sized array
        acc /= sx[None, :]
        return acc, len(origins)
