"""TrialConfig: validated once, errors name the file and field; shipped configs all load."""

from __future__ import annotations

from pathlib import Path

import pytest

from emseg_search.cli.train import build_parser
from emseg_search.config import ConfigError, TrialConfig
from emseg_search.models.pretrained import offline_entry
from emseg_search.models.registry import build_model, check_input_size

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


def test_every_field_is_a_flag() -> None:
    args = build_parser().parse_args(
        [
            "--arch",
            "deeplabv3plus",
            "--encoder",
            "resnet18",
            "--epochs",
            "2",
            "--tile-size",
            "128",
            "--loss",
            "dice+bce",
            "--no-amp",
            "--encoder-weights",
            "none",
            "--output-stride",
            "8",
        ]
    )
    assert (args.arch, args.epochs, args.tile_size, args.amp) == ("deeplabv3plus", 2, 128, False)
    assert args.encoder_weights is None and args.output_stride == 8
    for name in TrialConfig.model_fields:
        assert hasattr(args, name)


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
    validation run adds --val-file configs/splits/emps_val.csv (named in the file's header)."""
    cfg = TrialConfig.from_yaml(path)
    assert not {"val_file", "val_fraction"} & cfg.model_fields_set
    assert cfg.encoder_weights == "imagenet-offline"
    assert "--val-file configs/splits/emps_val.csv" in path.read_text(encoding="utf-8")
