"""Particle-level analysis of instance masks: labelling, per-particle tables, size figures.

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
from scipy import ndimage as ndi

from emseg_search.results import write_table

_F64 = pa.float64()
# Lengths measured in px, each with an ``<name>_px`` and an ``<name>_nm`` column.
LENGTHS: tuple[str, ...] = (
    "equivalent_diameter",
    "major_axis",
    "minor_axis",
    "feret_max",
    "perimeter",
)
PARTICLE_COLUMNS: dict[str, pa.DataType] = {
    "image": pa.string(),
    "particle_id": pa.int64(),  # the particle's id in the label map
    "centroid_y": _F64,
    "centroid_x": _F64,
    "bbox_min_row": pa.int64(),
    "bbox_min_col": pa.int64(),
    "bbox_max_row": pa.int64(),  # exclusive, numpy-slice style
    "bbox_max_col": pa.int64(),  # exclusive
    "touches_border": pa.bool_(),
    "area_px": pa.int64(),
    **{f"{n}_px": _F64 for n in LENGTHS},
    "circularity": _F64,
    "solidity": _F64,
    "eccentricity": _F64,
    "mean_intensity": _F64,  # in the image's own units; NaN without an image
    "pixel_size_nm": _F64,  # NaN when unknown, and then so are all *_nm columns
    "area_nm2": _F64,
    **{f"{n}_nm": _F64 for n in LENGTHS},
}
PARTICLE_SCHEMA = pa.schema(list(PARTICLE_COLUMNS.items()))
_PANDAS_DTYPES = {pa.string(): "str", pa.int64(): "int64", pa.bool_(): bool, _F64: "float64"}

# Watershed split (see `label_particles`): tuned on EMPS ground-truth masks.
SPLIT_SMOOTH_PX = 1.0
SPLIT_DEPTH_FRACTION = 0.1
SPLIT_MIN_DEPTH_PX = 1.0


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate an (H, W) integer instance map; a bool mask is a caller bug here."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"`{name}` must be an (H, W) label map, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer instance ids (0 = background), got dtype "
            f"{labels.dtype}; turn a binary mask into particles with `label_particles(mask)`"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"`{name}` must hold ids >= 0 (0 = background), got {labels.min()}")
    return labels


def _split_touching(fg: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Watershed of the smoothed distance transform, one marker per deep enough maximum."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndi.gaussian_filter(ndi.distance_transform_edt(fg), SPLIT_SMOOTH_PX) * fg
    markers = np.zeros(fg.shape, np.int32)
    n = 0
    for i, sl in enumerate(ndi.find_objects(cc), start=1):
        comp = cc[sl] == i
        d = np.pad(np.where(comp, dist[sl], 0.0), 1)  # zero rim: maxima need a lower surround
        depth = max(SPLIT_MIN_DEPTH_PX, SPLIT_DEPTH_FRACTION * d.max())
        peaks, k = ndi.label(h_maxima(d, depth)[1:-1, 1:-1] & comp, np.ones((3, 3)))
        if k == 0:  # too small or flat to split: the component is its own marker
            peaks, k = comp.astype(np.int32), 1
        markers[sl][peaks > 0] = peaks[peaks > 0] + n
        n += k
    return watershed(-dist, markers, mask=fg)


def label_particles(
    mask: np.ndarray, split_touching: bool = False, min_area: int = 4
) -> np.ndarray:
    """Particles of a binary mask (H, W) -> int32 labels (H, W), ids 1..N, 0 = background.

    Any non-zero pixel is foreground (instance ids of an integer map are ignored). Particles
    are 4-connected components, as `read_mask` labels binary mask files. With
    ``split_touching``, each component is cut by a watershed of its distance transform
    (Gaussian-smoothed, sigma 1 px) seeded at the maxima that rise at least
    max(1 px, 10 % of the component's largest inscribed radius) above the saddle to any
    higher maximum (h-maxima). The depth test, unlike a `peak_local_max` min_distance,
    leaves elongated particles whole (their distance ridge is flat) while two equal disks
    separate when the neck between them is narrower than about 90 % of their diameter.
    Particles smaller than ``min_area`` px (after splitting) are dropped: 4 px by default,
    the specks a network leaves.
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be (H, W), got shape {mask.shape}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"`mask` must be boolean or integer, got {mask.dtype}; threshold probabilities first"
        )
    if min_area < 0:
        raise ValueError(f"`min_area` must be >= 0, got {min_area}")
    fg = mask != 0
    labels = label(fg, connectivity=1).astype(np.int32)
    if split_touching and labels.max() > 0:
        labels = _split_touching(fg, labels).astype(np.int32)
    if min_area > 1:
        areas = np.bincount(labels.ravel())
        labels[(areas < min_area)[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def empty_particles() -> pd.DataFrame:
    """A particle table with no rows and all ``PARTICLE_COLUMNS`` in their dtypes."""
    return pd.DataFrame(
        {c: pd.Series(dtype=_PANDAS_DTYPES[t]) for c, t in PARTICLE_COLUMNS.items()}
    )


def _check_pixel_size(pixel_size: float | None) -> float:
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

    labels = _check_labels(labels)
    nm = _check_pixel_size(pixel_size)
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


def diameter_distance(true_diameters: np.ndarray, pred_diameters: np.ndarray) -> float:
    """1-Wasserstein distance between two samples of diameters (same unit as the input).

    An empty side counts as all its mass at diameter 0, so the distance is the other side's
    mean diameter (missing every particle costs their mean size); both empty -> 0.0.
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(true_diameters, np.float64).ravel()
    b = np.asarray(pred_diameters, np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("diameters must be finite (drop NaN rows, e.g. unknown pixel size)")
    if a.size == 0 or b.size == 0:
        return float(a.mean()) if a.size else float(b.mean()) if b.size else 0.0
    return float(wasserstein_distance(a, b))


def _diameters(labels: np.ndarray) -> np.ndarray:
    from skimage.measure import regionprops_table

    props = regionprops_table(labels, properties=("equivalent_diameter_area",))
    return props["equivalent_diameter_area"]


def size_distribution_distance(
    true_labels: np.ndarray, pred_labels: np.ndarray, pixel_size: float | None = None
) -> float:
    """Wasserstein distance between equivalent-diameter distributions of two (H, W) label maps.

    In px, or nm when ``pixel_size`` (nm per px) is given; empty sides as `diameter_distance`.
    """
    scale = _check_pixel_size(pixel_size) if pixel_size is not None else 1.0
    t = _diameters(_check_labels(true_labels, "true_labels"))
    p = _diameters(_check_labels(pred_labels, "pred_labels"))
    return diameter_distance(t, p) * scale
