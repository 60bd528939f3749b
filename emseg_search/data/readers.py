"""Readers for micrographs and masks: PNG, TIFF (8/16-bit, float), JPEG -> one grey channel."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from emseg_search.data.errors import FileProblem

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
# Luminance weights (ITU-R BT.601), what PIL's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114])


def _decode(path: Path) -> np.ndarray:
    """Decode any supported file into an array, turning decoder errors into FileProblem."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                arr = np.asarray(im)
    except FileNotFoundError:
        raise FileProblem(path, "file does not exist") from None
    except MemoryError:
        raise FileProblem(
            path, "cannot be decoded: it claims more pixels than memory holds"
        ) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on damaged files
        # tifffile raises TiffFileError (a ValueError), KeyError/IndexError on damaged IFDs and
        # ZeroDivisionError on zero-sized tiles (found by the fuzz test); PIL OSError/SyntaxError.
        reason = str(exc).strip() or type(exc).__name__
        raise FileProblem(path, f"cannot be decoded (corrupt or truncated?): {reason}") from None
    if arr.size == 0:
        raise FileProblem(path, "is empty (0 pixels)")
    return arr


def _channels_last(arr: np.ndarray, path: Path) -> np.ndarray:
    """Return (H, W) or (H, W, C); reject stacks and other shapes with a clear message."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] > 4:
        return np.moveaxis(arr, 0, -1)  # planar TIFF (C, H, W)
    raise FileProblem(
        path,
        f"has shape {arr.shape}; expected a single 2-D image (H, W) or (H, W, channels), "
        "not a stack or a multi-page/volume file",
    )


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    """Drop an alpha channel: grey+alpha -> grey, RGBA -> RGB."""
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Read a micrograph as one grey channel (H, W) in its native dtype (uint8/uint16/float32).

    Colour files whose channels are equal (grey saved as RGB, as in EMPS) lose nothing;
    true-colour files are converted with luminance weights and a warning.
    """
    path = Path(path)
    arr = _drop_alpha(_channels_last(_decode(path), path))
    if arr.ndim == 3:
        first = arr[..., 0]
        if all(np.array_equal(first, arr[..., c]) for c in range(1, arr.shape[-1])):
            arr = first
        else:
            warnings.warn(f"{path}: true-colour image converted to grey", stacklevel=2)
            grey = arr.astype(np.float64) @ _LUMA
            arr = np.round(grey).astype(arr.dtype) if arr.dtype.kind in "ui" else grey
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise FileProblem(path, "contains NaN or infinite pixel values")
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "i":
        if arr.min() < 0:
            raise FileProblem(path, "has negative pixel values; expected unsigned intensities")
        arr = arr.astype(np.uint16 if arr.max() <= 65535 else np.float32)
    elif arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def image_to_float01(image: np.ndarray) -> np.ndarray:
    """Map a grey image (H, W) to float32 in [0, 1].

    8-bit images are divided by 255. Deeper images (16-bit microscope TIFFs often fill only
    12 bits, floats have any range) are stretched between their own 0.1 and 99.9 percentiles,
    so data from different detectors meet on one scale.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, (0.1, 99.9))
    if hi <= lo:
        return np.zeros_like(img)
    return np.clip((img - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """Any grey micrograph (H, W) -> uint8 (H, W), stretched like the data layer does."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"`image` must be grey (H, W), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return np.round(image_to_float01(image) * 255).astype(np.uint8)


def read_mask(path: str | Path) -> tuple[np.ndarray, bool]:
    """Read a mask as instance labels (H, W) uint16/int32, 0 = background.

    Returns ``(labels, is_instance)``. Accepted: binary masks (0/1, 0/255, bool), whose
    particles become connected components (``is_instance=False``), and integer instance
    labels (EMPS segmaps, 16-bit). Anything else -- grey levels between 0 and 255 next to
    255 (anti-aliased or JPEG masks), negative or fractional values, colour-coded masks --
    raises FileProblem saying what was found.
    """
    from scipy import ndimage

    path = Path(path)
    arr = _drop_alpha(_channels_last(_decode(path), path))
    if arr.ndim == 3:
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[-1])):
            raise FileProblem(
                path,
                "is a colour mask with differing channels; expected a single-channel "
                "binary (0/255 or 0/1) or instance-label mask",
            )
        arr = arr[..., 0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise FileProblem(
                path,
                "has fractional or non-finite mask values; expected 0/1, 0/255 or "
                "integer instance labels",
            )
        arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise FileProblem(path, f"has negative mask values (min {arr.min()})")
    values = np.unique(arr)
    nonzero = values[values > 0]
    is_binary = len(nonzero) == 0 or (len(nonzero) == 1 and nonzero[0] in (1, 255))
    if is_binary:
        labels, _ = ndimage.label(arr > 0)
        return labels.astype(np.uint16 if labels.max() <= 65535 else np.int32), False
    if arr.dtype == np.uint8 and 255 in nonzero:
        shown = ", ".join(str(int(v)) for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise FileProblem(
            path,
            f"has {len(values)} distinct values ({shown}) including 255: neither binary "
            "(0/255, 0/1) nor instance labels -- an anti-aliased, resized or JPEG-saved mask? "
            "Save masks as PNG with nearest-neighbour resampling",
        )
    return arr.astype(np.uint16 if arr.max() <= 65535 else np.int32), True
