"""Training targets derived from instance maps (TrialConfig.target), once per image.

``derive_target`` turns an instance map (H, W), 0 = background, into what the network learns:

- ``binary``: the particle mask, (H, W) uint8 0/1;
- ``boundary``: (H, W) uint8 classes 0 background, 1 interior, 2 boundary: every particle
  pixel within ``boundary_width`` px of a pixel outside that particle (background or another
  particle) is boundary, so touching particles are cut apart by their two rims (DCAN-style);
- ``distance``: (H, W, 2) float32, the mask and each particle's Euclidean distance to its
  boundary divided by that particle's largest distance (1 at its centre, small at its rim and
  at a contact with a neighbour), for a watershed seeded at distance cores;
- ``instances`` (instance models, Mask R-CNN): the instance map itself, (H, W) uint16, moved
  with the image like any mask (nearest-neighbour keeps the ids); each training tile's boxes,
  masks and labels come from it after augmentation (``models.maskrcnn.instance_targets``).

A particle cut by the image edge is not bounded there: it goes on beyond the image, so its
rim and distances count only pixels inside the image. Distances are exact Euclidean
transforms, so a flip or 90-degree turn of the instance map flips or turns the target
exactly; training derives each target once, at the model's scale, and lets albumentations move
it with the image (nearest-neighbour, as any mask).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from emseg_search.config import TARGET_CHANNELS

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
MAX_INSTANCE_ID = 65535  # target 'instances' is held as uint16


def check_instance_map(labels: np.ndarray, name: str = "instances", hint: str = "") -> np.ndarray:
    """``labels`` as an array after checking it is an (H, W) integer instance map (0 =
    background); ValueError naming ``name`` (``hint`` appended) otherwise."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"`{name}` must be an (H, W) label map, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer ids of instances (0 = background), got dtype "
            f"{labels.dtype}{hint}"
        )
    return labels


def particle_distances(instances: np.ndarray) -> np.ndarray:
    """Per particle, each pixel's Euclidean distance (px) to the nearest pixel outside that
    particle (background or another particle; not the image edge): (H, W) float32, 0 outside
    particles, 1 at a rim pixel."""
    instances = check_instance_map(instances)
    h, w = instances.shape
    out = np.zeros((h, w), np.float32)
    for i, sl in enumerate(ndi.find_objects(instances), start=1):
        if sl is None:
            continue
        # one pixel of margin inside the image: what lies around the particle
        r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        inside = instances[r0:r1, c0:c1] == i
        # at the image edge the particle goes on: pad with "particle", elsewhere nothing to add
        pad = ((int(r0 == 0), int(r1 == h)), (int(c0 == 0), int(c1 == w)))
        d = ndi.distance_transform_edt(np.pad(inside, pad, constant_values=True))
        d = d[pad[0][0] : d.shape[0] - pad[0][1], pad[1][0] : d.shape[1] - pad[1][1]]
        out[r0:r1, c0:c1][inside] = d[inside]
    return out


def derive_target(instances: np.ndarray, target: str, boundary_width: int = 2) -> np.ndarray:
    """The ``target`` of an instance map (H, W): see the module docstring for shapes and
    dtypes ((H, W) uint8 for binary and boundary, (H, W, 2) float32 for distance, (H, W)
    uint16 for instances)."""
    if target not in TARGET_CHANNELS:
        raise ValueError(f"unknown target {target!r}; valid targets: {sorted(TARGET_CHANNELS)}")
    if boundary_width < 1:
        raise ValueError(f"`boundary_width` must be >= 1, got {boundary_width}")
    instances = check_instance_map(instances)
    if target == "instances":
        if instances.size and (instances.min() < 0 or instances.max() > MAX_INSTANCE_ID):
            raise ValueError(
                f"target 'instances' holds ids 0..{MAX_INSTANCE_ID} (uint16, what OpenCV warps), "
                f"got ids {instances.min()}..{instances.max()}"
            )
        return instances.astype(np.uint16)
    fg = instances > 0
    if target == "binary":
        return fg.astype(np.uint8)
    dist = particle_distances(instances)
    if target == "boundary":
        out = fg.astype(np.uint8)  # INTERIOR
        out[fg & (dist <= boundary_width)] = BOUNDARY
        return out
    peak = ndi.maximum(dist, instances, index=np.arange(instances.max() + 1))
    peak = np.asarray(peak, np.float32)
    norm = np.where(fg, dist / np.maximum(peak[instances], 1.0), 0.0).astype(np.float32)
    return np.stack([fg.astype(np.float32), norm], axis=-1)


def target_to_tensor_layout(target: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) target -> (C, H, W) float32, as the model's outputs are laid out."""
    target = np.asarray(target, np.float32)
    return target[None] if target.ndim == 2 else np.moveaxis(target, -1, 0)
