"""Synthetic micrographs mixed into real training data (TrialConfig.synthetic_mix).

The generator's three styles and its dense-small-particles-on-carbon scene, in turn (or the
cycle ``TrialConfig.synthetic_kinds`` names: a kind named twice comes twice as often), so a model
trained on real micrographs also sees bright- and dark-field contrast, SEM shading, film texture
and low dose it may not have real examples of. Seeded apart from the embedded data set (seed 0)
and from the robustness benchmark's synthetic domains (seed 1000).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from emseg_search.config import SYNTHETIC_KINDS, check_synthetic_kinds
from emseg_search.data.loading import Micrograph
from emseg_search.data.synth.generator import generate_sample

if TYPE_CHECKING:
    from emseg_search.config import TrialConfig

SEED = 2000
SIZE_SAMPLE = 64  # synthetic images input_particle_size measures (the mix's first ones)
# name (config.SYNTHETIC_KINDS) -> (generator style, generator scene)
KINDS: dict[str, tuple[str | None, str | None]] = {
    "tem": ("tem", None),
    "stem": ("stem", None),
    "sem": ("sem", None),
    "dense-small-carbon": (None, "dense-small-carbon"),
}


def mix_count(ratio: float, n_real: int) -> int:
    """Synthetic images to add to ``n_real`` real ones at ``ratio`` (synthetic per real)."""
    if ratio < 0:
        raise ValueError(f"synthetic_mix must be >= 0, got {ratio}")
    return round(ratio * n_real)


@functools.lru_cache(maxsize=4)
def synthetic_items(
    n: int, size: int, cycle: tuple[str, ...] = SYNTHETIC_KINDS, seed: int = SEED
) -> tuple[Micrograph, ...]:
    """``n`` labelled synthetic micrographs of ``size`` px, cycling through the kinds ``cycle``
    names (cached per process: every Train worker of a node draws the same ones once). Image i
    is seeded by (seed, i) whatever its kind."""
    cycle = check_synthetic_kinds(cycle)
    items = []
    for i in range(n):
        style, scene = KINDS[cycle[i % len(cycle)]]
        s = generate_sample([seed, i], size, style=style, scene=scene)
        items.append(Micrograph(f"synthetic-mix_{i:05d}", s.image, s.instances))
    return tuple(items)


@functools.lru_cache(maxsize=8)
def _median_diameter(n: int, size: int, cycle: tuple[str, ...]) -> float | None:
    """Area-weighted median equivalent diameter (px) of the particles of synthetic_items."""
    import numpy as np

    from emseg_search.data.fingerprint import area_weighted_diameters

    areas = np.concatenate(
        [np.bincount(m.instances.ravel())[1:] for m in synthetic_items(n, size, cycle)]
    )
    areas = areas[areas > 0]
    return float(area_weighted_diameters(areas, [50])[0]) if areas.size else None


def draw_size(cfg: TrialConfig) -> int:
    """The side (px) the mix's synthetic images are drawn at: the training tile at the model's
    input for ``synthetic_size: native``, the tile before ``scale`` shrinks it for ``model``."""
    if cfg.synthetic_size == "model":
        return max(64, round(cfg.tile_size / cfg.scale))
    return max(64, cfg.tile_size)


def input_particle_size(cfg: TrialConfig) -> float | None:
    """The area-weighted median diameter, in px of the model's input, of the synthetic particles
    ``cfg.synthetic_mix`` trained a model on (measured on the mix's first SIZE_SAMPLE images,
    which training drew the same way: image i is seeded by (SEED, i)); None without a mix.
    ``synthetic_size: native`` shows them at the generator's own size, ``model`` shrinks them
    by ``scale`` as the real images are (train.data.mixed_synthetic)."""
    if cfg.synthetic_mix <= 0 or cfg.is_synthetic:
        return None
    d = _median_diameter(SIZE_SAMPLE, draw_size(cfg), tuple(cfg.synthetic_kinds))
    if cfg.synthetic_size == "native" or d is None:
        return d
    return d * float(cfg.scale)
