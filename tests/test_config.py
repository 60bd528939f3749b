"""TrialConfig: validated once, errors name the file and field; shipped configs all load."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from emseg_search.cli.train import changed_fields
from emseg_search.cli.train import main as train_main
from emseg_search.config import ConfigError, TrialConfig
from emseg_search.losses import build_loss, build_trial_loss
from emseg_search.models.pretrained import offline_entry
from emseg_search.models.registry import build_model, check_input_size
from emseg_search.train.loops import build_scheduler, lr_factor

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_valid_and_frozen() -> None:
    cfg = TrialConfig()
    assert cfg.is_synthetic and cfg.arch == "unet"
    with pytest.raises(Exception, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]


def test_errors_name_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("arch: unet\nlearning_rate: 0.1\nlr: -1\n")
    with pytest.raises(ConfigError) as info:
        TrialConfig.from_yaml(f)
    text = str(info.value)
    assert f"{f}: learning_rate: unknown field; valid fields: " in text
    assert f"{f}: lr: Input should be greater than 0 (got -1)" in text


def test_invariants_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`warmup_epochs <= epochs` must hold"):
        TrialConfig.from_dict({"epochs": 1, "warmup_epochs": 2})
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        TrialConfig.from_yaml(f)


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = TrialConfig(arch="deeplabv3plus", output_stride=8, encoder_weights=None)
    again = TrialConfig.from_yaml(cfg.write_yaml(tmp_path / "c.yaml"), epochs=3)
    assert again == cfg.model_copy(update={"epochs": 3})


# A valid value other than the default for every field, as the command line spells it.
FLAGS: dict[str, tuple[list[str], object]] = {
    "data": (["--data", "/srv/emps"], "/srv/emps"),
    "val_file": (["--val-file", "/srv/val.csv"], "/srv/val.csv"),
    "val_fraction": (["--val-fraction", "0.25"], 0.25),
    "split_seed": (["--split-seed", "3"], 3),
    "group_by": (["--group-by", "metadata.csv:doi"], "metadata.csv:doi"),
    "test_file": (["--test-file", "/srv/test.csv"], "/srv/test.csv"),
    "scale": (["--scale", "0.5"], 0.5),
    "tile_size": (["--tile-size", "128"], 128),
    "tiles_per_image": (["--tiles-per-image", "2"], 2),
    "synthetic_mix": (["--synthetic-mix", "0.25"], 0.25),
    "synthetic_kinds": (
        ["--synthetic-kinds", "tem,dense-small-carbon*2"],  # KIND*N: N times
        ["tem", "dense-small-carbon", "dense-small-carbon"],
    ),
    "synthetic_size": (["--synthetic-size", "native"], "native"),
    "arch": (["--arch", "deeplabv3plus"], "deeplabv3plus"),
    "encoder": (["--encoder", "mobilenet_v2"], "mobilenet_v2"),
    "encoder_weights": (["--encoder-weights", "imagenet"], "imagenet"),
    "init_from": (["--init-from", "/srv/model"], "/srv/model"),
    "encoder_depth": (["--encoder-depth", "4"], 4),
    "output_stride": (["--output-stride", "8"], 8),
    "loss": (["--loss", "focal+tversky"], "focal+tversky"),
    "loss_weight": (["--loss-weight", "0.25"], 0.25),
    "focal_gamma": (["--focal-gamma", "1.5"], 1.5),
    "tversky_alpha": (["--tversky-alpha", "0.4"], 0.4),
    "tversky_beta": (["--tversky-beta", "0.6"], 0.6),
    "target": (["--target", "boundary"], "boundary"),
    "boundary_width": (["--boundary-width", "3"], 3),
    "target_weight": (["--target-weight", "0.7"], 0.7),
    "seed_threshold": (["--seed-threshold", "0.6"], 0.6),
    "score_threshold": (["--score-threshold", "0.3"], 0.3),
    "min_relative_area": (["--min-relative-area", "0.05"], 0.05),
    "augment": (["--augment", "em"], "em"),
    "augment_strength": (["--augment-strength", "1.5"], 1.5),
    "optimizer": (["--optimizer", "sgd"], "sgd"),
    "lr": (["--lr", "0.01"], 0.01),
    "weight_decay": (["--weight-decay", "0.001"], 0.001),
    "momentum": (["--momentum", "0.8"], 0.8),
    "batch_size": (["--batch-size", "4"], 4),
    "epochs": (["--epochs", "3"], 3),
    "warmup_epochs": (["--warmup-epochs", "0.5"], 0.5),
    "lr_min_factor": (["--lr-min-factor", "0.1"], 0.1),
    "grad_clip": (["--grad-clip", "2.5"], 2.5),
    "amp": (["--no-amp"], False),
    "channels_last": (["--no-channels-last"], False),
    "val_every": (["--val-every", "2"], 2),
    "threshold": (["--threshold", "0.4"], 0.4),
    "val_shifts": (["--val-shifts", "scale_x0.5,synth:tem"], ["scale_x0.5", "synth:tem"]),
    "robust_weight": (["--robust-weight", "0.3"], 0.3),
    "val_domain_inference": (["--val-domain-inference", "auto+tta"], "auto+tta"),
    "seed": (["--seed", "7"], 7),
    "loader_workers": (["--loader-workers", "2"], 2),
}


def trained_config(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrialConfig:
    """The TrialConfig `train` hands to run_training for ``argv`` (training itself stubbed)."""
    from emseg_search.train import driver

    seen: list[TrialConfig] = []

    def run_training(cfg: TrialConfig, run_dir: Path, **_: object) -> SimpleNamespace:
        seen.append(cfg)
        return SimpleNamespace(stop_reason=None, model_dir=None, best_val_iou=None)

    monkeypatch.setattr(driver, "run_training", run_training)
    assert train_main([*argv, "--results", str(tmp_path)]) == 1  # stub saved no model
    (cfg,) = seen
    return cfg


def test_every_field_is_a_flag_that_reaches_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(FLAGS) == set(TrialConfig.model_fields), "give each new field a value in FLAGS"
    argv = [arg for flag, _ in FLAGS.values() for arg in flag]
    cfg = trained_config(argv, tmp_path, monkeypatch)
    assert cfg.to_dict() == {name: value for name, (_, value) in FLAGS.items()}


def test_flags_override_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.02\nfocal_gamma: 3.0\nepochs: 5\n")
    cfg = trained_config([str(f), "--focal-gamma", "1.0"], tmp_path, monkeypatch)
    assert (cfg.lr, cfg.focal_gamma, cfg.epochs) == (0.02, 1.0, 5)


@pytest.mark.parametrize("flag", ["--grad-clip", "--encoder-weights"])
def test_none_on_the_command_line_clears_a_field(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("grad_clip: 2.0\nencoder_weights: imagenet\n")
    cfg = trained_config([str(f), flag, "none"], tmp_path, monkeypatch)
    assert getattr(cfg, flag[2:].replace("-", "_")) is None


def test_loss_and_schedule_options_reach_their_components() -> None:
    """focal_gamma, tversky_alpha/beta and lr_min_factor are config, not constants."""
    logits, target = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    # gamma 0 turns focal into BCE: -log(sigmoid(0)) = log 2; the default gamma 2 -> log2 / 4
    focal = build_trial_loss(TrialConfig(loss="focal", focal_gamma=0.0))
    assert focal(logits, target).item() == pytest.approx(math.log(2.0), rel=1e-5)
    default = build_trial_loss(TrialConfig(loss="focal"))
    assert default(logits, target).item() == pytest.approx(0.25 * math.log(2.0), rel=1e-5)
    # one foreground pixel of four, p = 0.5 everywhere: tp = 0.5, fp = 1.5, fn = 0.5
    one = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    tversky = TrialConfig(loss="tversky", tversky_alpha=0.7, tversky_beta=0.3)
    expected = 1 - 0.5 / (0.5 + 0.7 * 1.5 + 0.3 * 0.5)
    assert build_trial_loss(tversky)(logits, one).item() == pytest.approx(expected, abs=1e-5)

    for floor in (0.2, TrialConfig().lr_min_factor):
        cfg = TrialConfig(epochs=1, warmup_epochs=0, lr=0.1, lr_min_factor=floor)
        opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=cfg.lr)
        sched = build_scheduler(opt, cfg, steps_per_epoch=4)
        for _ in range(4):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * floor)


def test_library_defaults_are_the_config_defaults() -> None:
    """build_loss(name) and lr_factor without options mean what a default TrialConfig means."""
    fields = TrialConfig.model_fields
    loss_defaults = inspect.signature(build_loss).parameters
    for name in ("focal_gamma", "tversky_alpha", "tversky_beta"):
        assert loss_defaults[name].default == fields[name].default, name
    floor = inspect.signature(lr_factor).parameters["floor"].default
    assert floor == fields["lr_min_factor"].default


def test_config_saved_before_the_loss_and_schedule_fields_still_loads_and_resumes(
    tmp_path: Path,
) -> None:
    """A config.yaml written before focal_gamma, tversky_* and lr_min_factor existed loads
    as the run it was (today's defaults are the values it ran with), and `train --resume`
    with the same flags finds nothing changed."""
    new = ("focal_gamma", "tversky_alpha", "tversky_beta", "lr_min_factor")
    cfg = TrialConfig(loss="focal+tversky", epochs=3)
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k not in new}))
    assert TrialConfig.from_yaml(old) == cfg
    assert changed_fields(old, cfg.model_copy(update={"epochs": 5})) is None
    changed = changed_fields(old, cfg.model_copy(update={"focal_gamma": 1.0}))
    assert changed is not None and "focal_gamma: 2.0 -> 1.0" in changed


def test_config_saved_before_targets_loads_as_the_binary_target(tmp_path: Path) -> None:
    """A config.yaml written before TrialConfig.target existed is the binary model it was."""
    new = ("target", "boundary_width", "target_weight", "seed_threshold")
    cfg = TrialConfig(epochs=3)
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k not in new}))
    loaded = TrialConfig.from_yaml(old)
    assert loaded == cfg and loaded.target == "binary" and loaded.classes == 1
    assert changed_fields(old, cfg) is None
    assert [TrialConfig(target=t).classes for t in ("boundary", "distance")] == [3, 2]
    with pytest.raises(ConfigError, match="target: Input should be 'binary', 'boundary'"):
        TrialConfig.from_dict({"target": "flow"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"focal_gamma": -1}, "focal_gamma: Input should be greater than or equal to 0"),
        ({"tversky_beta": 1.5}, "tversky_beta: Input should be less than or equal to 1"),
        ({"lr_min_factor": 2}, "lr_min_factor: Input should be less than or equal to 1"),
        (
            {"tversky_alpha": 0, "tversky_beta": 0},
            "`tversky_alpha + tversky_beta > 0` must hold, got tversky_alpha=0.0",
        ),
    ],
)
def test_loss_and_schedule_options_are_bounded(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrialConfig.from_dict(values)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_build(path: Path) -> None:
    """Every shipped config loads and builds; its offline ImageNet weights are ones that
    `python -m emseg_search weights fetch` knows (loading them is test_weights' job, which
    needs the cache: the suite runs offline, so the model is built here without them)."""
    cfg = TrialConfig.from_yaml(path)
    check_input_size(cfg)
    if cfg.encoder_weights == "imagenet-offline":
        assert offline_entry(cfg.encoder).package
        cfg = cfg.model_copy(update={"encoder_weights": None})
    assert build_model(cfg) is not None


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.startswith("emps_")])
def test_emps_recipes_name_no_split_so_the_final_model_sees_every_image(path: Path) -> None:
    """The train command trains a config that names no split on every image; the recipes'
    validation run adds --val-file with a committed split (named in the file's header: the
    image-level emps_val.csv or the held-out papers' emps_test_papers.csv)."""
    cfg = TrialConfig.from_yaml(path)
    assert not {"val_file", "val_fraction"} & cfg.model_fields_set
    assert cfg.encoder_weights == "imagenet-offline"
    named = re.findall(r"--val-file (configs/splits/\S+\.csv)", path.read_text(encoding="utf-8"))
    assert named, f"{path.name} names no validation split in its header"
    for split in named:
        assert (path.parents[1] / split).is_file(), split
