"""TrialConfig: everything one training run needs, validated once (typed, frozen)."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SYNTHETIC = "synthetic"
# What the network learns (TrialConfig.target) -> its number of output channels: the particle
# mask (one logit); background / interior / boundary (softmax over three); or the mask plus
# each particle's distance to its boundary, normalised to 1 at its centre (two sigmoid logits);
# or, for instance models (Mask R-CNN), the instances themselves, given to the network as
# (particle logit, instance id, detection score) maps (models/maskrcnn.py).
TARGET_CHANNELS: dict[str, int] = {"binary": 1, "boundary": 3, "distance": 2, "instances": 3}
# Architectures that find instances directly (boxes + masks): their target is always
# "instances", and the semantic loss and target fields do not apply to them.
INSTANCE_ARCHS = ("maskrcnn",)
# What TrialConfig.synthetic_kinds may name: the generator's styles and its dense scene
# (data/synth/mix.py KINDS says how each is drawn).
SYNTHETIC_KINDS = ("tem", "stem", "sem", "dense-small-carbon")


def yaml_problem(exc: Exception) -> str:
    """One line for a YAML or file error: where it is and what is wrong."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


class ConfigError(ValueError):
    """A configuration is invalid; the message names the field (and file) at fault."""


class TrialConfig(BaseModel):
    """One training run: data, model, loss, augmentation, optimiser and schedule.

    Ray moves plain dicts: turn them into a TrialConfig at each Ray boundary with
    ``TrialConfig.from_dict`` and pass the typed object below it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # data
    data: str = Field(SYNTHETIC, description="data folder, or 'synthetic' for the embedded set")
    val_file: str | None = Field(None, description="split file naming the validation images")
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share held out for validation; 0: train on all images"
    )
    split_seed: int = 0
    group_by: str | None = Field(
        None,
        description="keep groups on one side of every split: CSV:COLUMN (EMPS: "
        "metadata.csv:doi) or regex:PATTERN",
    )
    test_file: str | None = Field(
        None, description="split file naming held-out test images: never trained or validated on"
    )
    scale: float = Field(1.0, gt=0.0, le=4.0, description="rescale images (0.5: half size)")
    tile_size: int = Field(256, ge=32, le=4096)
    tiles_per_image: int = Field(4, ge=1, description="training tiles drawn per image per epoch")
    synthetic_mix: float = Field(
        0.0,
        ge=0.0,
        le=4.0,
        description="synthetic training images added per real training image (the "
        "generator's styles and dense-small-carbon scene in turn, or the cycle "
        "synthetic_kinds names; one tile each, see synthetic_size); 0: none",
    )
    synthetic_kinds: tuple[str, ...] = Field(
        SYNTHETIC_KINDS,
        description="the cycle synthetic_mix draws its images from: the generator's styles "
        "tem, stem, sem and its dense-small-carbon scene; a kind named twice is drawn twice as "
        "often (KIND*N: N times); a list, or one comma-separated string",
    )
    synthetic_size: Literal["model", "native"] = Field(
        "model",
        description="model: each synthetic image is drawn one tile large at the images' scale, "
        "so its particles shrink with `scale` as the real ones do; native: drawn one tile "
        "large at the model's input, so its particles reach the model at the generator's own "
        "sizes (the dense scene's 6-16 px), the sizes --scale auto brings small particles to",
    )

    # model
    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = Field(
        None, description="null, 'imagenet' (hub), 'imagenet-offline' (shipped files) or a .pth"
    )
    init_from: str | None = Field(
        None,
        description="a model artifact folder (train's results/NAME/model) whose weights start "
        "the whole model: fine-tuning. It must be the same architecture, encoder and outputs; "
        "its input normalisation is kept, and encoder_weights are not loaded (nor needed)",
    )
    encoder_depth: int = Field(5, ge=3, le=5)
    output_stride: Literal[8, 16] | None = Field(None, description="DeepLab only")

    # target: what the network predicts, and how instances come out of it
    target: Literal["binary", "boundary", "distance", "instances"] = Field(
        "binary",
        description="binary: the particle mask; boundary: background / interior / a rim of "
        "boundary_width px; distance: the mask plus the distance to each particle's boundary "
        "(normalised per particle); instances: watershed of the mask (binary) or seeded at "
        "interior / distance cores (boundary, distance). arch maskrcnn always has target "
        "'instances' (boxes + masks per particle; any other value is replaced), and only it",
    )
    boundary_width: int = Field(
        2, ge=1, le=16, description="boundary target: rim width in px at the model's scale"
    )
    target_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="boundary/distance targets: weight of the instance term (the 3-class loss, "
        "or the distance loss) against the particle-mask loss (1 - weight)",
    )
    seed_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="boundary/distance targets: interior probability / normalised distance "
        "above which pixels seed a particle of the watershed",
    )

    score_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="maskrcnn: detections scoring below it are not particles",
    )
    min_relative_area: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="particles smaller than this fraction of the image's area-weighted median "
        "particle area are dropped (panel letters, scale-bar ticks, specks beside large "
        "particles); 0: off",
    )

    # loss and augmentation (maskrcnn: loss and its options are ignored; it trains its own
    # RPN + box + class + mask losses)
    loss: str = "dice+bce"
    loss_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="weight of the first term of a 'a+b' loss"
    )
    focal_gamma: float = Field(
        2.0, ge=0.0, le=10.0, description="focal loss focusing exponent (0: plain BCE)"
    )
    tversky_alpha: float = Field(
        0.3, ge=0.0, le=1.0, description="Tversky loss weight of false positives"
    )
    tversky_beta: float = Field(
        0.7, ge=0.0, le=1.0, description="Tversky loss weight of false negatives"
    )
    augment: str = "light"
    augment_strength: float = Field(1.0, ge=0.0, le=2.0)

    # optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, lt=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(10, ge=1)
    warmup_epochs: float = Field(1.0, ge=0.0)
    lr_min_factor: float = Field(
        0.01, ge=0.0, le=1.0, description="cosine schedule's final lr as a fraction of lr"
    )
    grad_clip: float | None = Field(1.0, gt=0.0)
    amp: bool = Field(True, description="mixed precision on GPU (ignored on CPU)")
    channels_last: bool = Field(
        True,
        description="train with weights and activations in channels-last (NHWC) memory: the "
        "same model, steps 1.17x (EfficientNet-Lite UNet) to 1.27x (DeepLabV3+) faster on 2 "
        "CPU cores (docs/benchmarks.md); smp architectures only (maskrcnn keeps its own)",
    )

    # evaluation
    val_every: int = Field(1, ge=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    val_shifts: tuple[str, ...] = Field(
        (),
        description="also score the validation images under these robustness shifts "
        "(scale_x0.5, dose_20, invert, ...; `evaluate --shifts` lists them), or synthetic "
        "domains' own images (synth:dense-small-carbon, ...; 16 each, drawn apart from the "
        "benchmark's), at every validation: val_robust_iou is their mean IoU",
    )
    robust_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="with val_shifts: val_score = (1 - w) val_iou + w val_robust_iou, which "
        "picks the best epoch (without: val_score = val_iou)",
    )
    val_domain_inference: Literal["model", "auto", "auto+tta"] = Field(
        "model",
        description="how the synthetic domains of val_shifts (synth:...) are predicted: at the "
        "model's scale (model), or as `evaluate --scale auto` (auto) or `--scale auto --tta` "
        "(auto+tta) predicts them, a working scale per image from the training particles' sizes "
        "(the robustness benchmark's way of running the UNet recipes); the shifts of the "
        "validation images stay at the model's scale",
    )

    # reproducibility and loading
    seed: int = 0
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per Train worker")

    @field_validator("init_from")
    @classmethod
    def _absolute_init_path(cls, value: str | None) -> str | None:
        # Ray workers run in other directories: the path must not depend on cwd
        return None if value is None else str(Path(value).expanduser().absolute())

    @field_validator("encoder_weights")
    @classmethod
    def _absolute_weights_path(cls, value: str | None) -> str | None:
        # Ray workers run in other directories: a relative .pth path must not depend on cwd
        if value is None or value in ("imagenet", "imagenet-offline"):
            return value
        return str(Path(value).expanduser().absolute())

    @field_validator("synthetic_kinds", mode="before")
    @classmethod
    def _kinds_text(cls, value: Any) -> Any:
        return expand_synthetic_kinds(value)

    @field_validator("synthetic_kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_synthetic_kinds(value)

    @model_validator(mode="before")
    @classmethod
    def _instance_target(cls, values: Any) -> Any:
        # an instance architecture learns the instances whatever `target` says: a search
        # space that samples `target` for its semantic architectures stays valid beside it
        if isinstance(values, dict) and values.get("arch") in INSTANCE_ARCHS:
            return {**values, "target": "instances"}
        return values

    @model_validator(mode="after")
    def _check(self) -> TrialConfig:
        if self.target == "instances" and self.arch not in INSTANCE_ARCHS:
            raise ValueError(
                f"target 'instances' is learnt by the instance architectures only "
                f"({', '.join(INSTANCE_ARCHS)}), got arch={self.arch!r}; use binary, boundary "
                "or distance"
            )
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"`warmup_epochs <= epochs` must hold, got warmup_epochs="
                f"{self.warmup_epochs}, epochs={self.epochs}"
            )
        if self.tversky_alpha + self.tversky_beta <= 0.0:
            # both 0 make the Tversky index tp / tp: a constant loss that teaches nothing
            raise ValueError(
                f"`tversky_alpha + tversky_beta > 0` must hold, got tversky_alpha="
                f"{self.tversky_alpha}, tversky_beta={self.tversky_beta}"
            )
        if self.val_domain_inference != "model":
            if not any(name.startswith("synth:") for name in self.val_shifts):
                raise ValueError(
                    f"val_domain_inference {self.val_domain_inference!r} predicts the synthetic "
                    "domains of val_shifts, and val_shifts names none (synth:...; "
                    f"got {list(self.val_shifts)})"
                )
            if self.arch in INSTANCE_ARCHS:
                raise ValueError(
                    f"val_domain_inference {self.val_domain_inference!r}: arch {self.arch!r} "
                    "finds instances on whole images at its own scale; use 'model'"
                )
        if self.target == "boundary" and "mcc" in [p.strip() for p in self.loss.split("+")]:
            raise ValueError(
                "target 'boundary' trains a 3-class softmax and smp's mcc loss is binary only; "
                "use another loss (dice, jaccard, focal, lovasz, tversky, bce or a pair)"
            )
        return self

    @property
    def classes(self) -> int:
        """Output channels of the model: 1 (binary), 3 (boundary), 2 (distance) or 3
        (instances: particle logit, instance id, detection score)."""
        return TARGET_CHANNELS[self.target]

    @property
    def is_synthetic(self) -> bool:
        """True when training on the embedded synthetic data set."""
        return self.data == SYNTHETIC

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrialConfig:
        """Validate a plain dict; ConfigError names each bad field."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "(config)"
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown field; valid fields: {', '.join(sorted(cls.model_fields))}"
                elif "input" in err and not isinstance(err["input"], dict):
                    msg = f"{msg} (got {err['input']!r})"
                lines.append(f"{source}: {field}: {msg}")
            raise ConfigError("\n".join(lines)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrialConfig:
        """Read a YAML file of fields (``overrides`` win); errors name the file and field."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read YAML: {yaml_problem(exc)}") from None
        if not isinstance(values, dict):
            raise ConfigError(
                f"{path}: expected a mapping of field: value, got {type(values).__name__}"
            )
        return cls.from_dict({**values, **overrides}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types (what Ray moves and what is saved beside outputs)."""
        return self.model_dump(mode="json")

    def write_yaml(self, path: str | Path) -> Path:
        """Save the resolved config (every field) as YAML, atomically."""
        from emseg_search.atomic import write_text

        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def expand_synthetic_kinds(value: Any) -> Any:
    """The written forms of a synthetic_kinds cycle as a list: a comma list in one string
    (``"tem,stem,sem,dense-small-carbon*3"``, what a search space's categorical choice or a
    command-line flag holds) or a list; ``KIND*N`` stands for KIND named N times. Anything else
    is returned as it is, for the field's own validation to reject."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        return value
    out: list[Any] = []
    for item in value:
        name, star, count = item.partition("*") if isinstance(item, str) else (item, "", "")
        if not star:
            out.append(item)
        elif count.strip().isdigit() and int(count) >= 1:
            out.extend([name.strip()] * int(count))
        else:
            raise ValueError(f"{item!r}: write KIND*N with N a whole number >= 1")
    return out


def check_synthetic_kinds(cycle: Sequence[str]) -> tuple[str, ...]:
    """``cycle`` as a tuple; ValueError when it is empty or names a kind not in
    SYNTHETIC_KINDS."""
    unknown = [k for k in cycle if k not in SYNTHETIC_KINDS]
    if unknown or not cycle:
        raise ValueError(
            f"unknown synthetic kind(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"valid: a list of {', '.join(SYNTHETIC_KINDS)} (repeat one to draw it more often)"
        )
    return tuple(cycle)


def field_type(name: str) -> tuple[type, tuple[Any, ...] | None, bool]:
    """(python type, Literal choices or None, optional) of a TrialConfig field."""
    annotation = TrialConfig.model_fields[name].annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0]), args, optional
    return annotation, None, optional
