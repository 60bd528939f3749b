"""Fine-tuning: ``TrialConfig.init_from`` names a model artifact (``train``'s results/NAME/model)
whose weights start the whole model instead of random or ImageNet-initialised ones.

The artifact must build the same network as the configuration (architecture, encoder, depth,
outputs): checked before any worker starts (``check_init_from``), by loading its weights into
the configuration's model. The run keeps the artifact's input normalisation, the one its
weights learned. A run that resumes from its own checkpoint starts from that checkpoint, not
from the artifact again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from emseg_search.config import TrialConfig
from emseg_search.inference.artifact import ArtifactError, ModelArtifact, load_artifact


def model_config(cfg: TrialConfig) -> TrialConfig:
    """The configuration ``cfg``'s model is built from: a fine-tuning run's (``init_from``)
    without ``encoder_weights``, which it neither loads nor needs (init_from supplies every
    weight); any other run's is ``cfg`` itself."""
    return cfg if cfg.init_from is None else cfg.model_copy(update={"encoder_weights": None})


def init_artifact(cfg: TrialConfig) -> ModelArtifact:
    """The artifact ``cfg.init_from`` names; ValueError naming the field when it is none."""
    assert cfg.init_from is not None
    try:
        return load_artifact(Path(cfg.init_from))
    except ArtifactError as exc:
        raise ValueError(f"init_from: {exc}") from None


def check_init_from(cfg: TrialConfig) -> None:
    """Fail before training when ``cfg.init_from`` is not an artifact whose weights fit the
    model ``cfg`` builds (ValueError naming the field, both networks and the first mismatch)."""
    if cfg.init_from is None:
        return
    from emseg_search.models.registry import build_model

    art = init_artifact(cfg)
    model = build_model(model_config(cfg))
    try:
        model.load_state_dict(art.model.state_dict(), strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), "")
        theirs = art.config
        raise ValueError(
            f"init_from: {cfg.init_from} holds a {theirs.arch}/{theirs.encoder} "
            f"(depth {theirs.encoder_depth}, target {theirs.target}) whose weights do not fit "
            f"this configuration's {cfg.arch}/{cfg.encoder} (depth {cfg.encoder_depth}, target "
            f"{cfg.target}): {first[:300]}"
        ) from None


def apply_init_from(model: nn.Module, cfg: TrialConfig) -> None:
    """Load the weights of ``cfg.init_from`` into ``model`` (in place; nothing without it)."""
    if cfg.init_from is None:
        return
    state = init_artifact(cfg).model.state_dict()
    with torch.no_grad():
        model.load_state_dict(state, strict=True)


def init_normalization(cfg: TrialConfig) -> tuple[float, float] | None:
    """(mean, std) of the ``cfg.init_from`` artifact, or None without one."""
    if cfg.init_from is None:
        return None
    art = init_artifact(cfg)
    return art.mean, art.std
