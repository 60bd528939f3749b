"""Measuring particles: one row per particle of an instance map, in px and nm.

A particle table has one row per particle with the columns of ``PARTICLE_COLUMNS``, always
all of them in that order (NaN where a value is unknown), so tables of many images concatenate
into one ``particles.parquet``. Lengths are in px; the ``*_nm`` columns hold the same lengths in
nm when the pixel size is known. Particles cut by the image edge (``touches_border``) bias size
statistics; filter them with ``df[~df.touches_border]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from emseg_search.particles.labelling import check_labels
from emseg_search.results.io import write_table
from emseg_search.results.schemas import F64, PARTICLE_COLUMNS, PARTICLE_SCHEMA

_F64 = F64
_PANDAS_DTYPES = {pa.string(): "str", pa.int64(): "int64", pa.bool_(): bool, _F64: "float64"}


def empty_particles() -> pd.DataFrame:
    """A particle table with no rows and all ``PARTICLE_COLUMNS`` in their dtypes."""
    return pd.DataFrame(
        {c: pd.Series(dtype=_PANDAS_DTYPES[t]) for c, t in PARTICLE_COLUMNS.items()}
    )


def check_pixel_size(pixel_size: float | None) -> float:
    if pixel_size is None:
        return float("nan")
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"`pixel_size` (nm per px) must be > 0, got {pixel_size}")
    return float(pixel_size)


def measure_particles(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    pixel_size: float | None = None,
    name: str = "",
) -> pd.DataFrame:
    """Per-particle table (``PARTICLE_COLUMNS``) of an (H, W) instance map, 0 = background.

    Lengths come from scikit-image's regionprops: equivalent diameter (of the disk with the
    particle's area), major/minor axes (of the ellipse with the same second moments), maximum
    Feret diameter and the Crofton perimeter. circularity = 4 pi area / perimeter^2, clipped
    to [0, 1] (pixelised particles of a few px can exceed 1). ``mean_intensity`` averages
    ``image`` (H, W) in its own units, unstretched. ``pixel_size`` is nm per px.
    """
    from skimage.measure import regionprops_table

    labels = check_labels(labels)
    nm = check_pixel_size(pixel_size)
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"`image` shape {np.shape(image)} differs from labels {labels.shape}")
    if not labels.any():
        return empty_particles()
    props = (
        *("label", "area", "centroid", "bbox", "equivalent_diameter_area"),
        *("axis_major_length", "axis_minor_length", "feret_diameter_max", "perimeter_crofton"),
        *("solidity", "eccentricity"),
    )
    intensity = None if image is None else np.asarray(image, dtype=np.float64)
    props += () if image is None else ("intensity_mean",)
    t = regionprops_table(labels, intensity_image=intensity, properties=props)
    h, w = labels.shape
    px = {
        "equivalent_diameter": t["equivalent_diameter_area"],
        "major_axis": t["axis_major_length"],
        "minor_axis": t["axis_minor_length"],
        "feret_max": t["feret_diameter_max"],
        "perimeter": t["perimeter_crofton"],
    }
    area = t["area"].astype(np.int64)
    circ = 4 * np.pi * area / np.maximum(px["perimeter"], 1e-12) ** 2
    cols = {
        "image": name,
        "particle_id": t["label"],
        "centroid_y": t["centroid-0"],
        "centroid_x": t["centroid-1"],
        "bbox_min_row": t["bbox-0"],
        "bbox_min_col": t["bbox-1"],
        "bbox_max_row": t["bbox-2"],
        "bbox_max_col": t["bbox-3"],
        "touches_border": (t["bbox-0"] == 0)
        | (t["bbox-1"] == 0)
        | (t["bbox-2"] == h)
        | (t["bbox-3"] == w),
        "area_px": area,
        **{f"{n}_px": v for n, v in px.items()},
        "circularity": np.clip(circ, 0.0, 1.0),
        "solidity": t["solidity"],
        "eccentricity": t["eccentricity"],
        "mean_intensity": t["intensity_mean"] if image is not None else np.nan,
        "pixel_size_nm": nm,
        "area_nm2": area * nm**2,
        **{f"{n}_nm": v * nm for n, v in px.items()},
    }
    df = pd.DataFrame(cols, columns=list(PARTICLE_COLUMNS))
    return df.astype({c: _PANDAS_DTYPES[t] for c, t in PARTICLE_COLUMNS.items()})


def concat_particles(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate particle tables of many images, keeping all columns and dtypes (0 rows ok)."""
    frames = [t for t in tables if len(t)]
    if not frames:
        return empty_particles()
    df = pd.concat([f[list(PARTICLE_COLUMNS)] for f in frames], ignore_index=True)
    return df.astype({c: _PANDAS_DTYPES[t] for c, t in PARTICLE_COLUMNS.items()})


def write_particles(particles: pd.DataFrame, path: str | Path) -> Path:
    """Write a particle table to Parquet with ``PARTICLE_SCHEMA``, atomically."""
    rows = particles[list(PARTICLE_COLUMNS)].to_dict("records")
    return write_table(rows, PARTICLE_SCHEMA, path)
