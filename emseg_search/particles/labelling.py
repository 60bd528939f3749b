"""Particles from masks: connected components, optionally split where particles touch.

The one place where a mask becomes instances: training-time validation, `evaluate`, `predict`
and the export recipe all call ``label_particles`` (through ``postprocess.to_instances`` for
models of the binary target).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from emseg_search.data.targets import check_instance_map

# Watershed split (see `label_particles`): tuned on EMPS ground-truth masks.
SPLIT_SMOOTH_PX = 1.0
SPLIT_DEPTH_FRACTION = 0.1
SPLIT_MIN_DEPTH_PX = 1.0


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate an (H, W) integer instance map; a bool mask is a caller bug here."""
    hint = "; turn a binary mask into particles with `label_particles(mask)`"
    return check_instance_map(labels, name, hint)


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
    return drop_small(labels, min_area)


def drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Remove particles smaller than ``min_area`` px from an (H, W) instance map; ids become
    1..N in the order they had (int32)."""
    from skimage.segmentation import relabel_sequential

    labels = np.asarray(labels).astype(np.int32)
    if min_area > 1:
        areas = np.bincount(labels.ravel())
        labels[(areas < min_area)[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)
