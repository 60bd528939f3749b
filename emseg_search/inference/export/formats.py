"""Export a model artifact for use outside Python: TorchScript or ONNX, plus ``export.json``.

``python -m emseg_search export MODEL_DIR --format torchscript|onnx [--out PATH]``

- torchscript: ``torch.jit.trace`` -> ``model.pt`` (libtorch: ``torch::jit::load``). Tracing,
  not scripting: scripting fails for unetplusplus, fcn and dpt, while traces of every registered
  arch were measured to give the eager logits at sizes other than the trace example (smp and
  timm size their upsampling from the input, so H/W are not baked in).
- onnx: torch's dynamo exporter (needs ``onnxscript``), opset 18, dynamic N, H and W, checked
  with onnxruntime (``pip install 'emseg-search[export]'``). pspnet and upernet do not export:
  their adaptive pooling to fixed bins has no ONNX form for a dynamic input size.
- maskrcnn (the instance model) exports to TorchScript by ``torch.jit.script``, not a trace: its
  detections are a data-dependent number of boxes whose masks are pasted one by one
  (models.maskrcnn.detections_to_maps, compiled as it is), which a trace would freeze to the
  example's count. Its output is the eval model's (N, 3, H, W) maps: particle logit, instance
  id, detection score. ONNX is refused for it (ExportError): torchvision's detection ops and
  the pasting loop have no dynamic-size ONNX form here.

Every export is verified against the artifact's eager model (``verify``: the same masks
at two sizes); ``export.json`` beside the model says how to preprocess an image.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emseg_search.atomic import atomic_path, write_text
from emseg_search.inference.artifact import ModelArtifact, load_artifact
from emseg_search.inference.export.errors import ExportError, ExportSetupError
from emseg_search.inference.export.verify import (
    JIT_DEPRECATED,
    LOGIT_TIE,
    SizeCheck,
    check_inputs,
    check_sizes,
    default_sizes,
    eager_logits,
    verify_export,
)

EXPORT_FORMAT = "emseg-search-export/1"
MODEL_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
INFO_FILE = "export.json"
ONNX_OPSET = 18  # what torch's dynamo exporter builds natively (no version conversion)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
INSTALL_HINT = "pip install 'emseg-search[export]'"


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how it compared with the eager model."""

    model_path: Path
    info_path: Path
    fmt: str
    checks: tuple[SizeCheck, ...]

    @property
    def ok(self) -> bool:
        """True when every size check passed."""
        return all(c.ok for c in self.checks)

    @property
    def max_abs_diff(self) -> float:
        """Largest logit difference over all checks."""
        return max(c.max_abs_diff for c in self.checks)


def to_torchscript(model: Any, example: np.ndarray, path: Path) -> list[str]:
    """Trace ``model`` on ``example`` (N, 1, H, W) and save it; returns tracer warnings."""
    import torch

    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, torch.from_numpy(example), check_trace=False)
        torch.jit.save(traced, str(path))
    return sorted(
        {
            f"{w.filename.rpartition('site-packages/')[2]}:{w.lineno}: {w.message}"
            for w in caught
            if issubclass(w.category, torch.jit.TracerWarning)
        }
    )


def instances_to_torchscript(model: Any, example: np.ndarray, path: Path) -> list[str]:
    """Script an instance model (Mask R-CNN) and save it; no notes (``example`` unused:
    nothing is traced)."""
    import torch

    from emseg_search.models.maskrcnn import script_for_export

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", JIT_DEPRECATED, FutureWarning)  # torch >= 2.10
        torch.jit.save(script_for_export(model), str(path))
    return []


def _require_onnx() -> None:
    """Raise ExportError naming the missing packages of the `export` extra."""
    import importlib.util

    import torch

    missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportSetupError(
            f"--format onnx needs {', '.join(missing)} (not installed); install them with: "
            f"{INSTALL_HINT}"
        )
    if not hasattr(torch.export, "Dim") or not hasattr(torch.export.Dim, "DYNAMIC"):
        raise ExportSetupError(
            f"--format onnx needs torch>=2.6 (dynamo exporter), found {torch.__version__}"
        )


def to_onnx(model: Any, example: np.ndarray, path: Path) -> list[str]:
    """Export ``model`` with dynamic N, H, W (dynamo exporter, opset ONNX_OPSET); no warnings."""
    import torch

    _require_onnx()
    dyn = {d: torch.export.Dim.DYNAMIC for d in (0, 2, 3)}
    torch.onnx.export(
        model,
        (torch.from_numpy(example),),
        str(path),
        dynamo=True,
        dynamic_shapes=(dyn,),
        input_names=["image"],
        output_names=["logits"],
        opset_version=ONNX_OPSET,
        external_data=False,
        verbose=False,
    )
    return []


# The recipe from logits at (H0, W0) to particles, per target (particles/postprocess.py).
POSTPROCESSING: dict[str, tuple[str, ...]] = {
    "binary": (
        "particle mask = sigmoid(logits) > threshold, i.e. logits > logit_threshold",
        "particles = 4-connected components of the mask; with postprocess.split_touching, "
        "each cut by a watershed of its distance transform (Gaussian sigma 1 px) seeded at "
        "h-maxima of depth max(1 px, 10 % of its largest inscribed radius)",
    ),
    "boundary": (
        "channels: background, interior, boundary; p = softmax over the channels",
        "particle mask = p[1] + p[2] > threshold",
        "seeds = 4-connected regions of p[1] > postprocess.seed_threshold inside the mask",
        "particles = watershed of p[2] - p[1] from the seeds over the mask (4-connected); a "
        "mask component without a seed is one particle",
    ),
    "distance": (
        "channels: particle logit, logit of the distance to the boundary (1 at a centre)",
        "particle mask = logits[0] > logit_threshold; d = sigmoid(logits[1])",
        "seeds = 4-connected regions of d > postprocess.seed_threshold inside the mask",
        "particles = watershed of -d from the seeds over the mask (4-connected); a mask "
        "component without a seed is one particle",
    ),
    "instances": (
        "channels: particle logit, instance id (1 = the highest-scoring detection, 0 = none), "
        "that detection's score",
        "particles = the pixels of each instance id; with postprocess.score_threshold above "
        "the exported one, drop the ids whose score is below it",
    ),
}


def _exporter_name(fmt: str, target: str) -> str:
    """What wrote the model file."""
    if fmt == "onnx":
        return f"torch.onnx.export(dynamo=True), opset {ONNX_OPSET}"
    return "torch.jit.script" if target == "instances" else "torch.jit.trace"


def build_info(art: ModelArtifact, fmt: str, model_path: Path, notes: list[str]) -> dict[str, Any]:
    """What ``export.json`` says: input/output, preprocessing, threshold, source metrics."""
    import importlib.metadata as md

    import torch

    from emseg_search import __version__
    from emseg_search.models.registry import min_input_size

    t, stride = art.threshold, int(art.meta["stride"])
    cut = math.log(t / (1.0 - t))
    post = art.postprocess
    instances = post.target == "instances"
    out_name = "maps" if instances else "logits"
    # instance ids cannot be interpolated (inference.predictor does the same)
    resize = "nearest-neighbour" if instances else "bilinearly (half-pixel centres)"
    return {
        "format": EXPORT_FORMAT,
        "model_format": fmt,
        "model_file": model_path.name,
        "exporter": _exporter_name(fmt, post.target),
        "input": {"name": "image", "shape": ["N", 1, "H", "W"], "dtype": "float32"},
        "output": {
            "name": out_name,
            "shape": ["N", post.channels, "H", "W"],
            "dtype": "float32",
        },
        "target": post.target,
        "postprocess": post.to_dict(),
        "mean": art.mean,
        "std": art.std,
        "normalization_source": art.meta["normalization"].get("source", ""),
        "threshold": t,
        "logit_threshold": cut,
        "scale": float(art.meta["scale"]),
        "stride": stride,
        "min_size": min_input_size(art.config),
        "preprocessing": [
            "read the micrograph as one grey channel (H0, W0) (grey saved as RGB: any channel)",
            "intensity to [0, 1]: 8-bit images x / 255; deeper images (16-bit, float) "
            "clip((x - p0.1) / (p99.9 - p0.1), 0, 1) with the image's own 0.1 and 99.9 "
            "percentiles (linear interpolation; all zeros if p99.9 <= p0.1)",
            "if scale != 1: resize to (round(H0 * scale), round(W0 * scale)) = (H, W), area "
            "interpolation when shrinking, bilinear when enlarging",
            "pad bottom and right by reflection without repeating the edge (numpy 'reflect', "
            "OpenCV BORDER_REFLECT_101) to (Hp, Wp), multiples of `stride`, at least `min_size`",
            "x = (x - mean) / std as float32, shape (N, 1, Hp, Wp)",
        ],
        "postprocessing": [
            f"{out_name} = model(x), shape (N, {post.channels}, Hp, Wp); crop to [:H, :W]",
            f"if scale != 1: resize the {out_name} {resize} to (H0, W0)",
            *POSTPROCESSING[post.target],
            "particles smaller than postprocess.min_area px are dropped; with "
            "postprocess.min_relative_area > 0 also those smaller than it x the image's "
            "area-weighted median particle area (the area of the particle holding the median "
            "particle pixel) (emseg_search.particles.postprocess.PostProcess.instances does "
            "all of this)",
        ],
        "arch": art.meta["arch"],
        "encoder": art.meta["encoder"],
        "encoder_depth": art.config.encoder_depth,
        "metrics": art.meta.get("metrics", {}),
        "source_artifact": str(art.path.resolve()),
        "trained_with": art.meta.get("versions", {}),
        "exported_with": {
            "emseg-search": __version__,
            "torch": torch.__version__,
            **({m: md.version(m) for m in ONNX_PACKAGES} if fmt == "onnx" else {}),
        },
        "notes": notes,
    }


def output_path(out: str | Path | None, model_dir: Path, fmt: str) -> Path:
    """The model file: ``out``, or model.pt/.onnx in a folder (``out`` without a suffix)."""
    out = Path(out) if out else model_dir / fmt
    return out / MODEL_FILES[fmt] if out.is_dir() or not out.suffix else out


def _run_exporter(fmt: str, art: ModelArtifact, example: np.ndarray, path: Path) -> list[str]:
    """Export with the format's exporter; its errors become one ExportError line."""
    exporter = to_torchscript if fmt == "torchscript" else to_onnx
    if art.postprocess.target == "instances":
        exporter = instances_to_torchscript
    try:
        return exporter(art.model, example, path)
    except ExportError:
        raise
    except Exception as exc:  # exporters raise many types; say which model failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "; --format torchscript may work" if fmt == "onnx" else ""
        raise ExportError(
            f"{fmt} export of {art.meta['arch']}/{art.meta['encoder']} failed: {first}{hint}"
        ) from exc


def export_model(
    model_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> ExportResult:
    """Export an artifact to ``out`` (default MODEL_DIR/<fmt>/model.*), verify, write export.json.

    Raises ArtifactError (not an artifact), ExportSetupError (unknown format, bad size,
    missing extra), ExportError (exporter or runtime failure). Masks that differ do not raise:
    the files are written, marked unverified in export.json; see ``ExportResult.ok``.
    """
    if fmt not in MODEL_FILES:
        raise ExportSetupError(
            f"format: unknown format {fmt!r}; valid: {', '.join(sorted(MODEL_FILES))}"
        )
    if fmt == "onnx":
        _require_onnx()  # before the slow part
    art = load_artifact(model_dir)
    if art.postprocess.target == "instances" and fmt != "torchscript":
        raise ExportError(
            f"{fmt} export of arch {art.meta['arch']!r} is not supported: its detections are "
            "a data-dependent number of boxes whose masks are pasted one by one, which has no "
            "ONNX form here; use --format torchscript"
        )
    out = output_path(out, art.path, fmt)
    trace_size, *_ = defaults = default_sizes(art)
    check_sizes(art, sizes or [])
    inputs = check_inputs(art, sizes or defaults)
    reference = eager_logits(art, inputs)  # before exporting: exporters may touch the model
    example = np.concatenate(2 * check_inputs(art, [trace_size]))  # N=2: N stays dynamic
    out.parent.mkdir(parents=True, exist_ok=True)
    # written in a temp folder (file names matter: TorchScript names its archive after the
    # file), moved into place once both files are complete
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        notes = _run_exporter(fmt, art, example, tmp / out.name)
        checks = verify_export(
            tmp / out.name, fmt, inputs, reference, art.threshold, art.postprocess.target
        )
        info = build_info(art, fmt, out, notes)
        info["verification"] = {
            "ok": all(c.ok for c in checks),
            "logit_tie": LOGIT_TIE,
            "checks": [{**asdict(c), "agreement": c.agreement} for c in checks],
        }
        with atomic_path(out) as final:
            os.replace(tmp / out.name, final)  # atomic_path fsyncs it and renames it over out
        write_text(out.parent / INFO_FILE, json.dumps(info, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, out.parent / INFO_FILE, fmt, checks)
