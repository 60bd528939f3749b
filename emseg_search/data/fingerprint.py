"""Data-set fingerprint (after nnU-Net): sizes, intensities, foreground and particle statistics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from emseg_search.atomic import write_text
from emseg_search.data.loading import Micrograph
from emseg_search.data.readers import image_to_float01

AREA_PERCENTILES = (5, 25, 50, 75, 95)
BY_AREA_PERCENTILES = (10, 25, 50, 75, 90)
_HIST_BINS = 4096  # intensity percentiles to 1/4096 of the [0, 1] range


class Stats(BaseModel):
    """min / median / mean / max of one quantity."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min: float
    median: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Stats:
        """Summarise values (all zeros for an empty sequence)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return cls(min=0.0, median=0.0, mean=0.0, max=0.0)
        return cls(
            min=float(v.min()), median=float(np.median(v)), mean=float(v.mean()), max=float(v.max())
        )


class Fingerprint(BaseModel):
    """What a data set looks like; intensities are in the [0, 1] units of ``image_to_float01``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_images: int
    dtypes: list[str]
    height: Stats
    width: Stats
    intensity_mean: float
    intensity_std: float
    intensity_p01: float
    intensity_p99: float
    foreground_fraction: float
    particles_per_image: Stats
    n_particles: int
    images_without_particles: int
    particle_area_px: dict[str, float]
    particle_diameter_px: dict[str, float]
    # percentiles of the diameter of the particle a random foreground pixel belongs to (the
    # sizes that make up most of the particle area); None in fingerprints written before
    particle_diameter_by_area_px: dict[str, float] | None = None

    def write_json(self, path: str | Path) -> Path:
        """Write the fingerprint as indented JSON (atomically)."""
        return write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> Fingerprint:
        """Read a fingerprint written by ``write_json``."""
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_table(self) -> str:
        """A human-readable two-column table."""

        def s(st: Stats, fmt: str = "{:.0f}") -> str:
            return (
                f"{fmt.format(st.min)} / {fmt.format(st.median)} / {fmt.format(st.mean)} / "
                f"{fmt.format(st.max)}"
            )

        pct = ", ".join(f"p{k[1:]}={v:.0f}" for k, v in self.particle_area_px.items())
        dia = ", ".join(f"p{k[1:]}={v:.1f}" for k, v in self.particle_diameter_px.items())
        by_area = ", ".join(
            f"p{k[1:]}={v:.1f}" for k, v in (self.particle_diameter_by_area_px or {}).items()
        )
        rows = [
            ("images", f"{self.n_images}  ({', '.join(self.dtypes)})"),
            ("height px (min/median/mean/max)", s(self.height)),
            ("width px (min/median/mean/max)", s(self.width)),
            ("intensity mean / std [0-1]", f"{self.intensity_mean:.3f} / {self.intensity_std:.3f}"),
            ("intensity p1 / p99 [0-1]", f"{self.intensity_p01:.3f} / {self.intensity_p99:.3f}"),
            ("foreground fraction", f"{self.foreground_fraction:.3f}"),
            (
                "particles",
                f"{self.n_particles}  ({self.images_without_particles} images without any)",
            ),
            ("particles/image (min/median/mean/max)", s(self.particles_per_image, "{:.1f}")),
            ("particle area px", pct),
            ("particle equiv. diameter px", dia),
            ("... by area (of a foreground px)", by_area or "not recorded"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    """Named percentiles ``p5``... of values (zeros when empty)."""
    if values.size == 0:
        return {f"p{q}": 0.0 for q in AREA_PERCENTILES}
    return {
        f"p{q}": float(v)
        for q, v in zip(AREA_PERCENTILES, np.percentile(values, AREA_PERCENTILES), strict=True)
    }


def area_weighted_diameters(areas: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Equivalent diameters of the particles (areas in px, at least one > 0) that hold the
    given percentiles of the foreground pixels: the q-th is the diameter of the particle a
    random particle pixel belongs to with probability q %, which specks cannot drag down."""
    order = np.sort(np.asarray(areas))
    cum = np.cumsum(order) / order.sum()
    idx = np.searchsorted(cum, np.asarray(percentiles, dtype=np.float64) / 100.0)
    return np.sqrt(4.0 * order[np.minimum(idx, order.size - 1)] / np.pi)


def _by_area_percentiles(areas: np.ndarray) -> dict[str, float]:
    """Area-weighted percentiles ``p10``... of equivalent diameters (zeros when empty)."""
    if areas.size == 0 or areas.sum() == 0:
        return {f"p{q}": 0.0 for q in BY_AREA_PERCENTILES}
    d = area_weighted_diameters(areas, BY_AREA_PERCENTILES)
    return {f"p{q}": float(v) for q, v in zip(BY_AREA_PERCENTILES, d, strict=True)}


def compute_fingerprint(items: Sequence[Micrograph]) -> Fingerprint:
    """Fingerprint decoded micrographs: one pass, streaming sums and an intensity histogram."""
    if not items:
        raise ValueError("cannot fingerprint an empty data set")
    total = fg = 0
    s1 = s2 = 0.0
    hist = np.zeros(_HIST_BINS, dtype=np.int64)
    areas: list[np.ndarray] = []
    counts: list[int] = []
    for m in items:
        x = image_to_float01(m.image).astype(np.float64)
        total += x.size
        s1 += float(x.sum())
        s2 += float(np.square(x).sum())
        hist += np.bincount(
            np.minimum((x * _HIST_BINS).astype(np.int64), _HIST_BINS - 1).ravel(),
            minlength=_HIST_BINS,
        )
        per_label = np.bincount(m.instances.ravel())[1:]
        a = per_label[per_label > 0]
        areas.append(a)
        counts.append(int(a.size))
        fg += int(a.sum())
    mean = s1 / total
    std = float(np.sqrt(max(s2 / total - mean**2, 0.0)))
    cdf = np.cumsum(hist) / total
    p01, p99 = (float((np.searchsorted(cdf, q) + 0.5) / _HIST_BINS) for q in (0.01, 0.99))
    all_areas = np.concatenate(areas).astype(np.float64)
    return Fingerprint(
        n_images=len(items),
        dtypes=sorted({str(m.image.dtype) for m in items}),
        height=Stats.of([m.image.shape[0] for m in items]),
        width=Stats.of([m.image.shape[1] for m in items]),
        intensity_mean=float(mean),
        intensity_std=std,
        intensity_p01=p01,
        intensity_p99=p99,
        foreground_fraction=fg / total,
        particles_per_image=Stats.of(counts),
        n_particles=int(sum(counts)),
        images_without_particles=sum(c == 0 for c in counts),
        particle_area_px=_percentiles(all_areas),
        particle_diameter_px=_percentiles(np.sqrt(4.0 * all_areas / np.pi)),
        particle_diameter_by_area_px=_by_area_percentiles(all_areas),
    )
