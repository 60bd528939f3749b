"""Segmenting new micrographs: mask, particle instances and their measurements per image, and
the folder of outputs `predict` writes:

DIR/
  masks/NAME.png       particle mask, 0/255, at the original resolution
  instances/NAME.png   16-bit particle labels (touching particles split unless told not to)
  overlays/NAME.png    particle outlines over the micrograph
  particles.parquet    one row per particle (results.schemas.PARTICLE_SCHEMA), px and nm
  sizes.png            histogram of equivalent diameters
  summary.json         model, options, images, particles, failures, each image's working scale
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emseg_search.data.readers import IMAGE_SUFFIXES

MAX_LABELS = 65535  # instances/NAME.png is 16-bit


@dataclass(frozen=True)
class Segmented:
    """One micrograph through the model: mask, particle labels and their measurements."""

    mask: np.ndarray  # (H, W) bool
    instances: np.ndarray  # (H, W) int32, 0 = background
    particles: Any  # pandas DataFrame, particles.PARTICLE_COLUMNS


def segment(
    predictor: Any,
    image: np.ndarray,
    name: str,
    split_touching: bool = True,
    pixel_size: float | None = None,
    min_area: int = 4,
) -> Segmented:
    """Mask, instances and particle table of one grey image with an inference.Predictor,
    through its artifact's post-processing (``particles.postprocess``; ``split_touching`` and
    ``min_area`` as given)."""
    from dataclasses import replace

    from emseg_search.particles.measurement import measure_particles
    from emseg_search.particles.postprocess import PostProcess

    post = getattr(predictor, "post", None) or PostProcess()
    post = replace(post, split_touching=split_touching, min_area=min_area)
    if post.target == "binary":
        mask = predictor.predict_mask(image)
        instances = post.label_mask(mask)
    else:
        outputs = predictor.predict_outputs(image)
        mask = post.mask(outputs)[0].numpy()
        instances = post.instances(outputs)
    particles = measure_particles(instances, image=image, pixel_size=pixel_size, name=name)
    return Segmented(mask, instances, particles)


def find_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files named by ``inputs`` (files, or folders of images / with an images/ folder),
    and one message per input that is neither. Names (file stems) must be unique: outputs
    are named after them."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            folder = path / "images" if (path / "images").is_dir() else path
            found = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem] != f:
            problems.append(f"{f}: same name as {seen[f.stem]}; outputs are named after files")
        seen.setdefault(f.stem, f)
    return list(dict.fromkeys(files)), problems


@dataclass
class PredictRun:
    """What predict_files did: outputs, particle table, failures (file, reason)."""

    out: Path
    images: int = 0
    particles: Any = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    working_scales: dict[str, float] = field(default_factory=dict)  # image -> scale it ran at


def _write_outputs(out: Path, name: str, image: np.ndarray, seg: Segmented) -> None:
    from PIL import Image

    from emseg_search.atomic import atomic_path
    from emseg_search.inference.figures import overlay, write_png

    write_png(out / "masks" / f"{name}.png", seg.mask.astype(np.uint8) * 255)
    if seg.instances.max() > MAX_LABELS:
        raise ValueError(f"{seg.instances.max()} particles do not fit a 16-bit label image")
    with atomic_path(out / "instances" / f"{name}.png") as tmp:
        Image.fromarray(seg.instances.astype(np.uint16)).save(tmp, format="PNG")
    write_png(out / "overlays" / f"{name}.png", overlay(image, seg.instances))


def predict_files(
    predictor: Any,
    files: Iterable[Path],
    out: str | Path,
    split_touching: bool = True,
    pixel_size: float | None = None,
    progress: bool = True,
) -> PredictRun:
    """Segment every file into ``out`` (see the module docstring); a file that cannot be read
    or segmented is listed in ``failures`` and the others go on."""
    from tqdm import tqdm

    from emseg_search.data.readers import read_image
    from emseg_search.inference.figures import size_histogram
    from emseg_search.particles.measurement import concat_particles, write_particles

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run, tables = PredictRun(out), []
    files = list(files)
    for path in tqdm(files, desc="predict", unit="image", disable=not progress):
        try:
            image = read_image(path)
            seg = segment(predictor, image, path.stem, split_touching, pixel_size)
            _write_outputs(out, path.stem, image, seg)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            run.failures.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        tables.append(seg.particles)
        run.images += 1
        if hasattr(predictor, "last_scale"):
            run.working_scales[path.stem] = float(predictor.last_scale)
    run.particles = concat_particles(tables)
    write_particles(run.particles, out / "particles.parquet")
    inner = run.particles[~run.particles["touches_border"]]
    size_histogram(
        inner,
        out / "sizes.png",
        title=f"Particle sizes: {run.images} image(s), border particles excluded",
    )
    return run
