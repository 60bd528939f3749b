"""The model artifact: a folder that describes itself and loads with no other input.

model/
  artifact.json     format, normalisation, threshold, scale, stride, target and post-processing
                    (particles.postprocess; maskrcnn also its detector settings), metrics
                    (validation; only best_epoch without a split), versions (artifacts from
                    before targets: binary, the defaults)
  config.yaml       the resolved TrialConfig it was trained with
  weights.pt        model state dict (best validation epoch; the last without validation)
  fingerprint.json  fingerprint of the training images
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emseg_search.atomic import atomic_dir
from emseg_search.config import INSTANCE_ARCHS, TrialConfig
from emseg_search.data import Fingerprint
from emseg_search.particles.postprocess import PostProcess

FORMAT = "emseg-search-model/1"
FILES = ("artifact.json", "config.yaml", "weights.pt", "fingerprint.json")


class ArtifactError(ValueError):
    """A folder is not a usable model artifact; the message names the folder and the fault."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact: the model (eval mode, CPU) and everything needed to use it."""

    path: Path
    model: nn.Module
    config: TrialConfig
    meta: dict[str, Any]
    fingerprint: Fingerprint

    @property
    def mean(self) -> float:
        """Input normalisation mean ([0, 1] intensity units)."""
        return float(self.meta["normalization"]["mean"])

    @property
    def std(self) -> float:
        """Input normalisation std."""
        return float(self.meta["normalization"]["std"])

    @property
    def threshold(self) -> float:
        """Probability threshold for the particle mask."""
        return float(self.meta["threshold"])

    @property
    def postprocess(self) -> PostProcess:
        """How outputs become a mask and particles: as recorded, or (artifacts written before
        targets) the config's, which is the binary target at the artifact's threshold."""
        recorded = self.meta.get("postprocess")
        if recorded:
            return PostProcess(**recorded)
        return PostProcess.of(self.config.model_copy(update={"threshold": self.threshold}))


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, Python's, and the CPU kernels torch ran.

    Seeded training repeats itself epoch by epoch on one machine, not across machines: another
    CPU (``cpu``: torch's kernel set, e.g. AVX2 or AVX512) or another OpenCV (augmentation)
    rounds differently and the run takes another path to a similar end.
    """
    import importlib.metadata as md
    import platform

    out = {}
    for name in (
        "emseg-search",
        "torch",
        "segmentation-models-pytorch",
        "timm",
        "ray",
        "optuna",
        "albumentations",
        "albucore",
        "opencv-python-headless",
        "numpy",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    out["cpu"] = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    return out


def write_artifact(
    out: str | Path,
    cfg: TrialConfig,
    state_dict: dict[str, torch.Tensor],
    mean: float,
    std: float,
    normalization_source: str,
    fingerprint: Fingerprint,
    stride: int,
    metrics: dict[str, float],
    trained_on: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder atomically: filled in a temp folder, then swapped in whole
    (a reader finds the old complete artifact or the new one). ``trained_on``: where the run
    trained (device, GPU, process-group backend, world size, mixed precision), as recorded."""
    out = Path(out)
    meta = {
        "format": FORMAT,
        "arch": cfg.arch,
        "encoder": cfg.encoder,
        "in_channels": 1,
        "classes": cfg.classes,
        "target": cfg.target,
        "postprocess": PostProcess.of(cfg).to_dict(),
        "normalization": {
            "mean": mean,
            "std": std,
            "source": normalization_source,
            "intensity": "image_to_float01 (8-bit /255; deeper: 0.1-99.9 pct)",
        },
        "threshold": cfg.threshold,
        "scale": cfg.scale,
        "stride": stride,
        "metrics": metrics,
        "versions": versions(),
    }
    if trained_on:
        meta["trained_on"] = trained_on
    if cfg.arch in INSTANCE_ARCHS:  # how the instance model finds its particles
        from emseg_search.models.maskrcnn import detector_settings

        meta["detector"] = detector_settings(cfg)
    with atomic_dir(out) as tmp:
        (tmp / "artifact.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        cfg.write_yaml(tmp / "config.yaml")
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp / "weights.pt")
        fingerprint.write_json(tmp / "fingerprint.json")
    return out


def load_artifact(path: str | Path) -> ModelArtifact:
    """Load an artifact folder; ArtifactError says what is missing or broken."""
    from emseg_search.models.registry import build_model
    from emseg_search.models.state_dict import TensorFileError, load_tensor_file

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a folder; expected a model artifact ({', '.join(FILES)})")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise ArtifactError(f"{path}: not a model artifact, missing {', '.join(missing)}")
    try:
        meta = json.loads((path / "artifact.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / 'artifact.json'}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(
            f"{path / 'artifact.json'}: format {meta.get('format')!r}, "
            f"this version reads {FORMAT!r}"
        )
    cfg = TrialConfig.from_yaml(path / "config.yaml", encoder_weights=None)
    model = build_model(cfg)
    try:
        state = load_tensor_file(path / "weights.pt")
    except TensorFileError as exc:
        raise ArtifactError(str(exc)) from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"{path / 'weights.pt'}: does not fit {cfg.arch}/{cfg.encoder}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    fingerprint = Fingerprint.load_json(path / "fingerprint.json")
    return ModelArtifact(path=path, model=model, config=cfg, meta=meta, fingerprint=fingerprint)
