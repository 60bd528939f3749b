"""Check an exported model against its artifact: the same masks on synthetic micrographs.

The exported file and the artifact's eager model run on inputs at two non-square sizes (the
first is the trace example's size, the second not; batch 1 then 2) and must give the same
masks, except where the eager logit is within ``LOGIT_TIE`` of the threshold. An instance
model (Mask R-CNN) must give the same instance id at every pixel.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emseg_search.inference.artifact import ModelArtifact
from emseg_search.inference.export.errors import ExportError, ExportSetupError

LOGIT_TIE = 1e-3  # a mask may differ only where the eager logit is this close to the threshold
JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"  # torch 2.14 warns on every jit call

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SizeCheck:
    """Exported vs eager model on one (N, 1, H, W) input."""

    shape: tuple[int, int, int, int]
    max_abs_diff: float  # max |logit difference|
    mask_mismatch: int  # pixels whose mask differs
    mask_mismatch_off_tie: int  # ... of those, where the eager logit is not within LOGIT_TIE
    finite: bool

    @property
    def agreement(self) -> float:
        """Fraction of pixels with the same mask."""
        return 1.0 - self.mask_mismatch / math.prod(self.shape)

    @property
    def ok(self) -> bool:
        """Masks agree except on near-ties of the threshold, and no NaN/inf."""
        return self.finite and self.mask_mismatch_off_tie == 0

    def summary(self) -> str:
        """One line for the terminal."""
        n, _, h, w = self.shape
        return (
            f"{h}x{w} (N={n}): max |logit diff| {self.max_abs_diff:.2e}, masks agree on "
            f"{100 * self.agreement:.4f}% ({self.mask_mismatch} px differ)"
            + ("" if self.ok else "  <- FAILED")
        )


def default_sizes(art: ModelArtifact) -> list[tuple[int, int]]:
    """Two small non-square (H, W), multiples of the stride; the first is the trace example's."""
    from emseg_search.models.registry import min_input_size

    stride = int(art.meta["stride"])
    m = -(-max(64, 2 * stride, min_input_size(art.config)) // stride) * stride
    return [(m, m + stride), (m + 2 * stride, m)]


def check_sizes(art: ModelArtifact, sizes: Sequence[tuple[int, int]]) -> None:
    """Raise ExportSetupError unless every (H, W) is a multiple of the stride, >= min size."""
    from emseg_search.models.registry import min_input_size

    stride, low = int(art.meta["stride"]), min_input_size(art.config)
    bad = [f"{h}x{w}" for h, w in sizes if h % stride or w % stride or min(h, w) < low]
    if bad:
        raise ExportSetupError(
            f"check sizes must be multiples of {stride} of at least {low}, got {', '.join(bad)}"
        )


def check_inputs(art: ModelArtifact, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Normalised synthetic micrographs (N, 1, H, W) float32: N=1 at the first size, else 2."""
    from emseg_search.data import image_to_float01
    from emseg_search.data.synth.generator import generate_sample

    out = []
    for i, (h, w) in enumerate(sizes):
        imgs = [generate_sample(10 * i + k, (h, w)).image for k in range(1 if i == 0 else 2)]
        x = np.stack([image_to_float01(im) for im in imgs])[:, None]
        out.append(((x - art.mean) / art.std).astype(np.float32))
    return out


def load_runner(path: Path, fmt: str) -> Runner:
    """A function running the exported file: (N, 1, H, W) float32 -> logits, numpy in and out."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # its errors are raised and reported; no log line too
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", JIT_DEPRECATED, FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), warnings.catch_warnings():
            # a scripted torchvision detector (Mask R-CNN) says so on every call
            warnings.filterwarnings("ignore", "RCNN always returns", UserWarning)
            return module(torch.from_numpy(x)).numpy()

    return run


def compare(eager: np.ndarray, exported: np.ndarray, threshold: float) -> SizeCheck:
    """Compare exported logits with eager ones (N, C, H, W), every channel at the mask
    threshold's logit."""
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(x) > t  <=>  x > logit(t)
    if exported.shape != eager.shape:
        raise ExportError(f"exported model returned shape {exported.shape}, eager {eager.shape}")
    differ = (eager > cut) != (exported > cut)
    return SizeCheck(
        shape=tuple(int(v) for v in eager.shape),
        max_abs_diff=float(np.abs(eager.astype(np.float64) - exported).max()),
        mask_mismatch=int(differ.sum()),
        mask_mismatch_off_tie=int((differ & (np.abs(eager - cut) > LOGIT_TIE)).sum()),
        finite=bool(np.isfinite(exported).all()),
    )


def compare_instances(eager: np.ndarray, exported: np.ndarray) -> SizeCheck:
    """Compare an instance model's exported maps with eager ones (N, 3, H, W): the instance
    id (channel 1) must be the same at every pixel; no tie is forgiven."""
    if exported.shape != eager.shape:
        raise ExportError(f"exported model returned shape {exported.shape}, eager {eager.shape}")
    differ = int((eager[:, 1] != exported[:, 1]).sum())
    return SizeCheck(
        shape=(eager.shape[0], 1, eager.shape[2], eager.shape[3]),
        max_abs_diff=float(np.abs(eager.astype(np.float64) - exported).max()),
        mask_mismatch=differ,
        mask_mismatch_off_tie=differ,
        finite=bool(np.isfinite(exported).all()),
    )


def eager_logits(art: ModelArtifact, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The artifact's own model on each input (N, 1, H, W) -> logits (N, C, H, W)."""
    import torch

    with torch.inference_mode():
        return [art.model(torch.from_numpy(x)).numpy() for x in inputs]


def verify_export(
    path: Path,
    fmt: str,
    inputs: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    threshold: float,
    target: str = "binary",
) -> tuple[SizeCheck, ...]:
    """Run the exported file on each input and compare its masks (instance ids, for the
    target 'instances') with the reference outputs."""
    run = load_runner(path, fmt)
    checks = []
    for x, eager in zip(inputs, reference, strict=True):
        try:
            exported = run(x)
        except Exception as exc:  # onnxruntime/libtorch errors have no common base
            hint = "; --format torchscript may work" if fmt == "onnx" else ""
            raise ExportError(
                f"the exported {fmt} model fails at input shape {x.shape}: "
                f"{str(exc).strip().splitlines()[0]}{hint}"
            ) from exc
        if target == "instances":
            checks.append(compare_instances(eager, exported))
        else:
            checks.append(compare(eager, exported, threshold))
    return tuple(checks)
