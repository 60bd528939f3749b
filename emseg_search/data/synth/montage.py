"""A side-by-side montage of synthetic and real EM images, to eyeball the generator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from emseg_search.atomic import atomic_path
from emseg_search.data.synth.generator import SynthSample, generate_sample

_TILE = 256
_COLS = 6


def _square(img: np.ndarray, px: int = _TILE) -> np.ndarray:
    """Centre-crop to a square and resize to (px, px) uint8 grey."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[y0 : y0 + s, x0 : x0 + s]).convert("L")
    return np.asarray(crop.resize((px, px), Image.Resampling.LANCZOS))


def _synthetic(src: str | Path | Sequence[SynthSample] | None, n: int, seed: int) -> list:
    if src is None:
        return [_square(generate_sample([seed, i], _TILE).image) for i in range(n)]
    if isinstance(src, (str, Path)):
        paths = sorted((Path(src) / "images").glob("*.png"))
        if not paths:
            raise ValueError(f"`synth_dir_or_samples` has no images/*.png: {src}")
        return [_square(np.asarray(Image.open(p))) for p in paths[:n]]
    return [_square(s.image) for s in list(src)[:n]]


def _real(real_dir: str | Path, n: int, seed: int) -> list:
    paths = sorted((Path(real_dir) / "images").glob("*.png"))
    if not paths:
        raise ValueError(f"`real_dir` has no images/*.png: {real_dir}")
    pick = np.random.default_rng(seed).choice(len(paths), min(n, len(paths)), replace=False)
    return [_square(np.asarray(Image.open(paths[i]).convert("L"))) for i in sorted(pick)]


def render_montage(
    out_png: str | Path,
    synth_dir_or_samples: str | Path | Sequence[SynthSample] | None = None,
    real_dir: str | Path | None = None,
    n_synth: int = 12,
    n_real: int = 6,
    seed: int = 0,
) -> Path:
    """Render synthetic tiles (rows "synthetic") above real EMPS tiles (rows "EMPS") to a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state to switch

    groups = [("synthetic", _synthetic(synth_dir_or_samples, n_synth, seed))]
    if real_dir is not None and n_real > 0:
        groups.append(("EMPS", _real(real_dir, n_real, seed)))
    rows = [(name, t[i : i + _COLS]) for name, t in groups for i in range(0, len(t), _COLS)]
    size = (2.2 * _COLS, 2.25 * len(rows))
    fig = Figure(figsize=size)
    axes = fig.subplots(len(rows), _COLS, squeeze=False)
    for r, (name, tiles) in enumerate(rows):
        for c in range(_COLS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(tiles):
                ax.imshow(tiles[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=13)
    fig.subplots_adjust(left=0.04, right=0.995, top=0.995, bottom=0.005, wspace=0.03, hspace=0.03)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=128, format="png")  # ~native 256 px per tile
    return Path(out_png)
