"""space: shipped YAML files, error messages, Optuna define-by-run, mapping, random search."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from emseg_search.config import TrialConfig
from emseg_search.losses import COMBINATIONS
from emseg_search.models.registry import check_encoder, check_input_size, min_batch_size
from emseg_search.space.errors import SpaceError
from emseg_search.space.spec import SearchSpace, load_space, space_from_dict

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))
EMPS_SPACES = [p for p in SPACES if "emps" in str(load_space(p).data)]
PAIRS = list(COMBINATIONS[:3])
BASE: dict[str, Any] = {
    "name": "t",
    "budget": {"num_samples": 4},
    "scheduler": {"type": "asha", "max_epochs": 3},
    "fixed": {"tile_size": 128, "batch_size": 4},
    "parameters": {
        "arch": {"type": "categorical", "choices": ["unet", "deeplabv3plus", "fpn"]},
        "encoder": {
            "type": "categorical",
            "depends_on": "arch",
            "choices": {
                "unet": ["resnet18", "mobilenet_v2"],
                "deeplabv3plus": ["resnet18"],
                "fpn": ["resnet34", "mobilenet_v2"],
            },
        },
        "output_stride": {
            "type": "categorical",
            "choices": [8, 16],
            "when": {"arch": ["deeplabv3plus"]},
        },
        "loss": {"type": "categorical", "choices": ["bce", *PAIRS]},
        "loss_weight": {"type": "float", "low": 0.2, "high": 0.8, "when": {"loss": PAIRS}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "tiles_per_image": {"type": "int", "low": 1, "high": 7, "step": 2},
    },
}


def with_changes(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced; ``parameters__x`` / ``fixed__x`` set one entry."""
    values = copy.deepcopy(BASE)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            values[section][name] = value
        else:
            values[section] = value
    return values


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return space_from_dict(BASE, source="base.yaml")


def check_conditionals(params: dict[str, Any]) -> None:
    """The {field: value} dict honours BASE's `when` and `depends_on`."""
    allowed = BASE["parameters"]["encoder"]["choices"][params["arch"]]
    assert params["encoder"] in allowed
    assert ("output_stride" in params) == (params["arch"] == "deeplabv3plus")
    assert ("loss_weight" in params) == (params["loss"] in PAIRS)


# ---- shipped spaces ----------------------------------------------------------------------------


def test_shipped_spaces_exist() -> None:
    names = {p.name for p in SPACES}
    assert {"quick.yaml", "unet_vs_deeplabv3plus.yaml", "emps_cpu.yaml", "full.yaml"} <= names


def test_emps_spaces_are_found() -> None:
    assert {p.name for p in EMPS_SPACES} >= {"emps_cpu.yaml", "emps_robust_cpu.yaml", "full.yaml"}


@pytest.mark.parametrize("path", EMPS_SPACES, ids=lambda p: p.name)
def test_emps_spaces_never_select_on_the_held_out_papers(path: Path) -> None:
    """Every shipped EMPS space splits by paper and keeps the held-out papers (the split the
    recipes are measured on) out of training and of the validation it selects on."""
    space = load_space(path)
    assert space.fixed.get("group_by") == "metadata.csv:doi"
    test_file = space.fixed.get("test_file")
    assert test_file == "configs/splits/emps_test_papers.csv"
    assert (path.parents[1] / test_file).is_file()


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_loads_and_round_trips(path: Path) -> None:
    """Loads; random draws make valid TrialConfigs; smoke_test shrinks; to_dict round-trips."""
    space = load_space(path)
    assert space.param_names
    rng = np.random.default_rng(0)
    for _ in range(10):
        params = space.random_params(rng)
        assert set(params) <= set(space.param_names)
        cfg = space.trial_config(params, data="synthetic")
        assert isinstance(cfg, TrialConfig) and cfg.epochs == space.scheduler.max_epochs
        check_encoder(cfg)
        check_input_size(cfg)
    smoke = space.smoke_test()
    assert smoke.budget.num_samples == 2 and smoke.budget.time_budget_s is None
    assert (smoke.scheduler.max_epochs, smoke.scheduler.grace_period) == (1, 1)
    for _ in range(10):
        cfg = smoke.trial_config(smoke.random_params(rng))
        assert cfg.tiles_per_image == 1 and cfg.epochs == 1
        assert min_batch_size(cfg) <= cfg.batch_size <= 2
        assert 64 <= cfg.tile_size <= 128
        check_input_size(cfg)
    dumped = space.to_dict()
    json.dumps(dumped)
    assert space_from_dict(dumped).to_dict() == dumped


def test_quick_is_a_cpu_synthetic_comparison() -> None:
    space = load_space(SPACES[0].parent / "quick.yaml")
    assert space.data == "synthetic" and space.resources.gpus_per_worker == 0
    assert set(space.parameters["arch"].all_choices) == {"unet", "deeplabv3plus"}
    # ImageNet encoders from the offline weight files (`make venv` fetches them): no hub
    from emseg_search.models.pretrained import OFFLINE_ENCODERS

    assert space.base_values()["encoder_weights"] == "imagenet-offline"
    assert set(space.parameters["encoder"].all_choices) <= set(OFFLINE_ENCODERS)
    # the default search must end on a laptop whatever the trials do: a time budget stops it
    assert space.budget.time_budget_s is not None and space.budget.time_budget_s <= 10 * 60


# ---- error messages ----------------------------------------------------------------------------

ERRORS = {
    "unknown top-level key": (
        {**BASE, "nmae": "x"},
        r"^base\.yaml: nmae: unknown key; valid keys: name, description, data",
    ),
    "unknown section key": (
        with_changes(scheduler={"max_epoch": 3}),
        r"scheduler\.max_epoch: unknown key; valid keys: type, max_epochs, grace_period",
    ),
    "unknown runner": (
        with_changes(resources={"runner": "inline"}),
        r"resources\.runner: Input should be 'auto' or 'train'",
    ),
    "unknown spec key": (
        with_changes(parameters__lr={"type": "float", "low": 1, "high": 2, "lgo": True}),
        r"parameters\.lr\.lgo: unknown key; valid keys: when, type, low, high, log, step",
    ),
    "bad type": (
        with_changes(parameters__lr={"type": "flaot", "low": 1, "high": 2}),
        r"parameters\.lr: `type` must be one of float, int, categorical, got 'flaot'",
    ),
    "bad bounds": (
        with_changes(parameters__lr={"type": "float", "low": 0.1, "high": 0.01}),
        r"parameters\.lr: `low < high` must hold, got low=0\.1, high=0\.01",
    ),
    "log with zero": (
        with_changes(parameters__lr={"type": "float", "low": 0, "high": 0.1, "log": True}),
        r"`low > 0` must hold with log: true, got low=0\.0",
    ),
    "step not dividing": (
        with_changes(parameters__tiles_per_image={"type": "int", "low": 1, "high": 6, "step": 2}),
        r"`high - low` must be a multiple of `step`, got low=1, high=6, step=2",
    ),
    "unreported metric": (
        with_changes(metric="val_ioo"),
        r"metric: 'val_ioo' is not reported by training; valid: val_iou, val_dice",
    ),
    "robust metric without shifts": (
        with_changes(metric="val_robust_iou"),
        r"metric: val_robust_iou is only reported with `fixed.val_shifts`",
    ),
    "metric better low, mode max": (
        with_changes(metric="val_count_error"),
        r"mode: val_count_error is better low, so `mode: max` would search for the worst "
        r"models; set `mode: min`",
    ),
    "one objective": (
        with_changes(objectives=["val_particle_f1"]),
        r"objectives: name 2 or more metrics, got \['val_particle_f1'\]; a single objective "
        r"is `metric` and `mode`",
    ),
    "unknown objective": (
        with_changes(objectives={"val_iou": "max", "val_f1": "max"}),
        r"objectives\.val_f1: not an objective; valid: val_iou, val_dice, val_score",
    ),
    "objective the wrong way": (
        with_changes(objectives={"val_iou": "max", "val_ms_per_megapixel": "max"}),
        r"objectives\.val_ms_per_megapixel: val_ms_per_megapixel is better low, so `max` would "
        r"search for the worst models; write `val_ms_per_megapixel: min`",
    ),
    "objective misspelt direction": (
        with_changes(objectives={"val_iou": "maximize", "val_dice": "max"}),
        r"objectives\.val_iou: Input should be 'max' or 'min' \(got 'maximize'\)",
    ),
    "objective twice": (
        with_changes(objectives=["val_iou", "val_dice", "val_iou"]),
        r"objectives: `objectives` lists val_iou twice",
    ),
    "robust objective without shifts": (
        with_changes(objectives=["val_iou", "val_robust_iou"]),
        r"objectives\.val_robust_iou: only reported with `fixed\.val_shifts`",
    ),
    "population without NSGA-II": (
        with_changes(searcher={"type": "optuna", "population_size": 8}),
        r"searcher: `population_size` is NSGA-II's \(type: nsga2\), got type: optuna",
    ),
    "unknown validation shift": (
        with_changes(fixed__val_shifts=["scale_x0.5", "blur"]),
        r"fixed\.val_shifts: unknown shift\(s\) blur; valid: scale_x0\.25, scale_x0\.5",
    ),
    "grace period": (
        with_changes(scheduler={"max_epochs": 2, "grace_period": 5}),
        r"scheduler: `grace_period <= max_epochs` must hold, got grace_period=5, max_epochs=2",
    ),
    "reduction factor": (
        with_changes(scheduler={"max_epochs": 2, "reduction_factor": 1}),
        r"`reduction_factor > 1` must hold, got reduction_factor=1\.0",
    ),
    "unknown arch": (
        with_changes(parameters__arch={"type": "categorical", "choices": ["unet", "Unet"]}),
        r"parameters\.arch\.choices: unknown arch 'Unet'; valid: deeplabv3, .*unet",
    ),
    "unknown encoder": (
        with_changes(
            parameters__encoder={
                "type": "categorical",
                "depends_on": "arch",
                "choices": {"unet": ["resnet19"]},
            }
        ),
        r"parameters\.encoder\.choices\.unet: unknown encoder 'resnet19'.*close matches: resnet18",
    ),
    "unknown loss": (
        with_changes(parameters__loss={"type": "categorical", "choices": ["bce", "dice+dice"]}),
        r"parameters\.loss\.choices: unknown loss 'dice\+dice'; valid base losses: \['bce', 'dice'",
    ),
    "unknown augment": (
        with_changes(fixed__augment="strong"),
        r"fixed\.augment: unknown augment 'strong'; valid: em, flips, heavy, light, none",
    ),
    "unknown optimizer": (
        with_changes(parameters__optimizer={"type": "categorical", "choices": ["adamw", "lion"]}),
        r"parameters\.optimizer\.choices: Input should be 'adamw', 'adam' or 'sgd' \(got 'lion'\)",
    ),
    "unknown fixed field": (
        with_changes(fixed__learning_rate=0.1),
        r"fixed\.learning_rate: not a TrialConfig field; valid fields: .*arch, .*lr",
    ),
    "unknown parameter field": (
        with_changes(parameters__nope={"type": "int", "low": 1, "high": 2}),
        r"parameters\.nope: not a TrialConfig field; valid fields:",
    ),
    "epochs in fixed": (
        with_changes(fixed__epochs=3),
        r"fixed\.epochs: set by scheduler\.max_epochs, not here",
    ),
    "out of TrialConfig range": (
        with_changes(parameters__loss_weight={"type": "float", "low": 0.5, "high": 2.0}),
        r"parameters\.loss_weight\.high: Input should be less than or equal to 1",
    ),
    "loss option out of range": (
        with_changes(parameters__focal_gamma={"type": "float", "low": -1.0, "high": 3.0}),
        r"parameters\.focal_gamma\.low: Input should be greater than or equal to 0",
    ),
    "schedule option out of range": (
        with_changes(fixed__lr_min_factor=1.5),
        r"fixed\.lr_min_factor: Input should be less than or equal to 1",
    ),
    "yaml 1.1 float as text": (
        with_changes(parameters__lr={"type": "categorical", "choices": ["1e-4", 0.001]}),
        r"parameters\.lr\.choices: '1e-4' is text, not a number",
    ),
    "when names a later parameter": (
        with_changes(
            parameters={
                "output_stride": {"type": "categorical", "choices": [8], "when": {"arch": "x"}},
                "arch": {"type": "categorical", "choices": ["deeplabv3plus"]},
            }
        ),
        r"parameters\.output_stride\.when\.arch: `arch` is sampled after `output_stride`",
    ),
    "depends_on names an unknown parameter": (
        with_changes(
            parameters__encoder={
                "type": "categorical",
                "depends_on": "archh",
                "choices": {"unet": ["resnet18"]},
            }
        ),
        r"parameters\.encoder\.depends_on: `archh` is neither an earlier parameter nor a fixed",
    ),
    "when value never taken": (
        with_changes(
            parameters__loss_weight={
                "type": "float",
                "low": 0.2,
                "high": 0.8,
                "when": {"loss": ["dice+bec"]},
            }
        ),
        r"parameters\.loss_weight\.when\.loss: unknown loss 'dice\+bec'",
    ),
    "depends_on key never taken": (
        with_changes(
            parameters__encoder={
                "type": "categorical",
                "depends_on": "arch",
                "choices": {"unet": ["resnet18"], "pna": ["resnet18"]},
            }
        ),
        r"parameters\.encoder\.depends_on: unknown arch 'pna'; valid: deeplabv3,",
    ),
    "when value never reachable": (
        with_changes(
            parameters__output_stride={
                "type": "categorical",
                "choices": [8, 16],
                "when": {"arch": ["deeplabv3"]},
            }
        ),
        r"when\.arch: never sampled: `arch` takes \['unet', 'deeplabv3plus', 'fpn'\]",
    ),
    "when on a numeric parameter": (
        with_changes(
            parameters={
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2},
                "arch": {"type": "categorical", "choices": ["unet"], "when": {"lr": 0.01}},
            }
        ),
        r"parameters\.arch\.when\.lr: `lr` is not categorical",
    ),
    "encoder that does not fit the arch": (
        with_changes(
            fixed={"encoder": "mobilenet_v2"},
            parameters={"arch": {"type": "categorical", "choices": ["unet", "fcn"]}},
        ),
        r"combination arch='fcn': encoder: arch 'fcn' takes a torchvision ResNet, got 'mobilenet",
    ),
    "tile too small for pan": (
        with_changes(
            fixed={"tile_size": 64, "batch_size": 2},
            parameters={"arch": {"type": "categorical", "choices": ["unet", "pan"]}},
        ),
        r"combination arch='pan': tile_size: arch 'pan' .* multiple of 16 of at least 128, got 64",
    ),
    "output_stride without when": (
        with_changes(
            parameters__output_stride={"type": "categorical", "choices": [8, 16]},
        ),
        r"combination arch='unet', encoder='resnet18', output_stride=8: output_stride: only deep",
    ),
    "batch of one for deeplab": (
        with_changes(fixed={"tile_size": 128, "batch_size": 1}),
        r"batch_size: arch 'deeplabv3plus' needs at least 2 images per batch",
    ),
    "offline weights missing": (
        with_changes(fixed__encoder_weights="imagenet-offline"),
        r"combination arch='unet', encoder='resnet18'.*no weights for 'resnet18'",
    ),
    "no validation images": (
        with_changes(fixed__val_fraction=0.0),
        r"fixed\.val_fraction: 0 leaves no validation images",
    ),
    "never sampled": (
        with_changes(
            fixed={"tile_size": 128, "arch": "unet"},
            parameters={
                "output_stride": {
                    "type": "categorical",
                    "choices": [8, 16],
                    "when": {"arch": "deeplabv3plus"},
                }
            },
        ),
        r"never sampled: `arch` is fixed to 'unet', none of \['deeplabv3plus'\]",
    ),
}


@pytest.mark.parametrize("values, pattern", ERRORS.values(), ids=ERRORS.keys())
def test_errors_name_the_key_and_the_rule(values: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SpaceError, match=pattern) as info:
        space_from_dict(values, source="base.yaml")
    assert all(line.startswith("base.yaml: ") for line in str(info.value).splitlines())


def test_a_space_may_select_on_the_robust_score() -> None:
    space = space_from_dict(
        with_changes(metric="val_score", fixed__val_shifts=["scale_x0.5", "dose_20"]),
        source="robust.yaml",
    )
    assert space.metric == "val_score"
    assert list(space.base_values()["val_shifts"]) == ["scale_x0.5", "dose_20"]


def test_file_errors_start_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbudget: {num_samples: 0}\nscheduler: {max_epochs: 1}\n")
    with pytest.raises(SpaceError, match=rf"^{path}: budget\.num_samples: Input should be"):
        load_space(path)
    path.write_text("name: [x\n")
    with pytest.raises(SpaceError, match=rf"^{path}: cannot read YAML"):
        load_space(path)
    with pytest.raises(SpaceError, match=r"missing\.yaml: cannot read YAML"):
        load_space(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "resources, inline",
    [
        ({}, True),
        ({"workers": 2}, False),
        ({"runner": "train"}, False),
        ({"gpus_per_worker": 1}, True),
    ],
)
def test_one_worker_trials_run_inline_unless_told_otherwise(
    resources: dict[str, Any], inline: bool
) -> None:
    space = space_from_dict(with_changes(resources=resources), source="base.yaml")
    assert space.resources.inline is inline


# ---- Optuna define-by-run and Ray's OptunaSearch -----------------------------------------------


@pytest.mark.parametrize("builder", ["plain_tpe", "space_sampler"])
def test_define_by_run_with_real_tpe(space: SearchSpace, builder: str) -> None:
    """20 TPE trials: no dynamic-space errors or warnings; conditionals hold in every trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = (
            optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
            if builder == "plain_tpe"
            else space.searcher.build_sampler()
        )
        study = optuna.create_study(sampler=sampler, direction="maximize")
        define = space.define_by_run()

        def objective(trial: optuna.Trial) -> float:
            assert define(trial) is None
            cfg = space.trial_config(trial.params)
            return float(cfg.arch == "unet") + cfg.lr

        study.optimize(objective, n_trials=20)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    seen_arch = set()
    for trial in study.trials:
        arch = trial.params["arch"]
        seen_arch.add(arch)
        assert "encoder" not in trial.params and f"encoder|arch={arch}" in trial.params
        check_conditionals(space.sampled_params(trial.params))
    assert seen_arch == {"unet", "deeplabv3plus", "fpn"}


def test_objectives_as_a_list_take_each_metric_s_better_direction() -> None:
    listed = space_from_dict(
        with_changes(objectives=["val_particle_f1", "val_count_error", "val_ms_per_megapixel"])
    )
    mapped = {"val_particle_f1": "max", "val_count_error": "min", "val_ms_per_megapixel": "min"}
    assert listed.objectives == mapped
    assert list(listed.objectives) == list(mapped)  # file order: the first is the x axis
    assert space_from_dict(listed.to_dict()).objectives == mapped
    assert space_from_dict(BASE).objectives is None


@pytest.mark.parametrize("kind", ["optuna", "nsga2", "random"])
def test_every_sampler_searches_several_objectives_and_pickles(kind: str) -> None:
    """Each searcher type drives a 2-objective study over the conditional space, and survives
    the pickling Tune snapshots it with (optuna 5's NSGA-II holds a lock that does not)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    extra = {"population_size": 4} if kind == "nsga2" else {}
    space = space_from_dict(
        with_changes(objectives=["val_iou", "val_count_error"], searcher={"type": kind, **extra})
    )
    study = optuna.create_study(
        sampler=space.searcher.build_sampler(), directions=["maximize", "minimize"]
    )
    define = space.define_by_run()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        define(trial)
        cfg = space.trial_config(trial.params)
        return float(cfg.arch == "unet") + cfg.lr, cfg.lr

    study.optimize(objective, n_trials=6)
    study.sampler = pickle.loads(pickle.dumps(study.sampler))
    study.optimize(objective, n_trials=6)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        check_conditionals(space.sampled_params(trial.params))
    assert study.best_trials


def test_ray_optuna_search_suggests_without_ray_init(space: SearchSpace) -> None:
    """OptunaSearch takes the define-by-run function; its configs map back to fields."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=space.define_by_run(),
        metric="val_iou",
        mode="max",
        sampler=space.searcher.build_sampler(),
    )
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        assert any(key.startswith("encoder|arch=") for key in config)
        params = space.sampled_params(config)
        check_conditionals(params)
        assert space.trial_config(config).arch == params["arch"]
        searcher.on_trial_complete(f"t{i}", {"val_iou": 0.5, "training_iteration": 1})
    pickle.loads(pickle.dumps(space.define_by_run()))  # OptunaSearch.save pickles it


# ---- mapping, trial configs, random search, smoke test -----------------------------------------


def test_sampled_params_maps_branch_names(space: SearchSpace) -> None:
    raw = {"arch": "unet", "encoder|arch=unet": "mobilenet_v2", "loss": "bce", "lr": 0.01}
    raw["tiles_per_image"] = 3
    assert space.sampled_params(raw) == {
        "arch": "unet",
        "encoder": "mobilenet_v2",
        "loss": "bce",
        "lr": 0.01,
        "tiles_per_image": 3,
    }
    encoder = raw.pop("encoder|arch=unet")
    plain = {**raw, "encoder": encoder}
    assert space.sampled_params(plain)["encoder"] == "mobilenet_v2"


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"learning_rate": 0.1}, r"params: unknown parameter 'learning_rate'"),
        ({"output_stride": 8}, r"params: output_stride: given, but its `when`"),
        ({"loss": "dice+bce"}, r"params: loss_weight: missing"),
        ({"encoder|arch=fpn": "resnet34"}, r"'encoder\|arch=unet' and 'encoder\|arch=fpn' both"),
        ({"encoder|arch=unet": "resnet34"}, r"encoder: 'resnet34' is not among"),
    ],
)
def test_sampled_params_rejects_inconsistent_params(
    space: SearchSpace, change: dict[str, Any], pattern: str
) -> None:
    raw = {"arch": "unet", "encoder|arch=unet": "resnet18", "loss": "bce", "lr": 0.01}
    with pytest.raises(SpaceError, match=r"^base\.yaml: .*" + pattern):
        space.sampled_params({**raw, "tiles_per_image": 1, **change})


def test_trial_config_is_fixed_plus_sampled(space: SearchSpace) -> None:
    raw = {
        "arch": "deeplabv3plus",
        "encoder|arch=deeplabv3plus": "resnet18",
        "output_stride": 8,
        "loss": PAIRS[0],
        "loss_weight": 0.3,
        "lr": 0.002,
        "tiles_per_image": 5,
    }
    cfg = space.trial_config(raw, data="/data/emps")
    assert (cfg.arch, cfg.encoder, cfg.output_stride, cfg.loss) == (
        "deeplabv3plus",
        "resnet18",
        8,
        PAIRS[0],
    )
    assert (cfg.loss_weight, cfg.lr, cfg.tiles_per_image) == (0.3, 0.002, 5)
    assert (cfg.tile_size, cfg.batch_size, cfg.epochs, cfg.data) == (128, 4, 3, "/data/emps")
    assert space.trial_config(raw).data == "synthetic"


def test_loss_and_schedule_options_are_searchable_like_any_field() -> None:
    """focal_gamma, tversky_alpha/beta and lr_min_factor: sampled (under a `when`), fixed,
    in the trial's config and as typed params_ columns of trials.parquet."""
    from emseg_search.results.schemas import trial_schema

    values = with_changes(
        fixed__lr_min_factor=0.05,
        parameters__loss={"type": "categorical", "choices": ["focal+tversky", "bce"]},
        parameters__loss_weight={"type": "float", "low": 0.2, "high": 0.8},
        parameters__focal_gamma={
            "type": "float",
            "low": 0.5,
            "high": 3.0,
            "when": {"loss": ["focal+tversky"]},
        },
        parameters__tversky_alpha={"type": "categorical", "choices": [0.3, 0.5, 0.7]},
    )
    space = space_from_dict(values, source="options.yaml")
    rng = np.random.default_rng(0)
    draws = [space.random_params(rng) for _ in range(20)]
    assert {("focal_gamma" in d) for d in draws} == {True, False}
    for params in draws:
        cfg = space.trial_config(params)
        assert cfg.lr_min_factor == 0.05 and cfg.tversky_beta == 0.7
        assert cfg.tversky_alpha == params["tversky_alpha"]
        assert cfg.focal_gamma == params.get("focal_gamma", 2.0)
        if "focal_gamma" in params:
            assert 0.5 <= cfg.focal_gamma <= 3.0
    schema = trial_schema(space.param_names)
    assert schema.field("params_focal_gamma").type == "double"
    assert schema.field("params_tversky_alpha").type == "double"


def test_random_params_honour_conditionals_and_bounds(space: SearchSpace) -> None:
    draws = [space.random_params(np.random.default_rng(seed)) for seed in range(200)]
    for params in draws:
        check_conditionals(params)
        assert 1e-4 <= params["lr"] <= 1e-2 and params["tiles_per_image"] in (1, 3, 5, 7)
    lrs = np.log10([p["lr"] for p in draws])
    assert lrs.min() < -3.5 and lrs.max() > -2.5  # log-uniform: both decades are visited
    assert {p["arch"] for p in draws} == {"unet", "deeplabv3plus", "fpn"}
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    assert space.random_params(rng_a) == space.random_params(rng_b)


def test_param_names_in_file_order(space: SearchSpace) -> None:
    assert space.param_names == tuple(BASE["parameters"])


def test_smoke_test_picks_sizes_every_arch_accepts() -> None:
    values = with_changes(
        parameters={
            "arch": {"type": "categorical", "choices": ["unet", "pan", "deeplabv3plus"]},
            "tile_size": {"type": "categorical", "choices": [256, 512]},
            "batch_size": {"type": "int", "low": 4, "high": 16},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        },
        fixed={"warmup_epochs": 3, "val_every": 2},
        budget={"num_samples": 50, "time_budget_s": 3600},
        scheduler={"max_epochs": 30, "grace_period": 5},
    )
    smoke = space_from_dict(values).smoke_test()
    assert smoke.param_names == ("arch", "lr")
    assert smoke.fixed["tile_size"] == 128  # pan needs >= 128; unet 32 | 128
    assert smoke.fixed["batch_size"] == 2 and smoke.fixed["tiles_per_image"] == 1
    assert smoke.fixed["warmup_epochs"] == 1 and smoke.fixed["val_every"] == 1
    assert smoke.budget.time_budget_s is None and smoke.budget.num_samples == 2
    assert space_from_dict(with_changes()).smoke_test().fixed["tile_size"] == 64


def test_fixed_value_is_the_fallback_of_a_conditional_parameter() -> None:
    space = space_from_dict(with_changes(fixed__loss_weight=0.7))
    raw = {"arch": "fpn", "encoder|arch=fpn": "resnet34", "lr": 0.01, "tiles_per_image": 1}
    assert space.trial_config({**raw, "loss": "bce"}).loss_weight == 0.7
    assert space.trial_config({**raw, "loss": PAIRS[0], "loss_weight": 0.4}).loss_weight == 0.4
    with pytest.raises(SpaceError, match=r"parameters\.lr: also in `fixed`, but always sampled"):
        space_from_dict(with_changes(fixed__lr=0.01))


def test_readme_example_loads() -> None:
    """The format example in search_spaces/README.md is a valid space."""
    import yaml

    text = (SPACES[0].parent / "README.md").read_text(encoding="utf-8")
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    space = space_from_dict(yaml.safe_load(example), source="README.md")
    assert space.param_names[:3] == ("arch", "encoder", "output_stride")


def test_the_target_is_searchable_and_particle_f1_a_metric() -> None:
    """target (binary / boundary / distance) as a parameter, boundary_width and target_weight
    only where they mean something, and the search selecting on validation particle F1."""
    from emseg_search.results.schemas import trial_schema

    values = with_changes(
        metric="val_particle_f1",
        parameters__target={"type": "categorical", "choices": ["binary", "boundary", "distance"]},
        parameters__boundary_width={
            "type": "int",
            "low": 1,
            "high": 3,
            "when": {"target": ["boundary"]},
        },
        parameters__target_weight={
            "type": "float",
            "low": 0.3,
            "high": 0.7,
            "when": {"target": ["boundary", "distance"]},
        },
    )
    space = space_from_dict(values, source="targets.yaml")
    assert space.metric == "val_particle_f1"
    draws = [space.random_params(np.random.default_rng(seed)) for seed in range(30)]
    assert {d["target"] for d in draws} == {"binary", "boundary", "distance"}
    for params in draws:
        cfg = space.trial_config(params)
        assert cfg.target == params["target"]
        assert ("boundary_width" in params) == (cfg.target == "boundary")
        assert ("target_weight" in params) == (cfg.target != "binary")
        if cfg.target == "binary":
            assert (cfg.boundary_width, cfg.target_weight) == (2, 0.5)  # the defaults
    assert trial_schema(space.param_names).field("params_target").type == "string"
    with pytest.raises(SpaceError, match="flow"):
        space_from_dict(
            with_changes(parameters__target={"type": "categorical", "choices": ["flow"]}),
            source="bad.yaml",
        )


def test_fuzzed_space_files_raise_only_space_errors(tmp_path: Path) -> None:
    """Random YAML documents (real and made-up keys, any values) and random text: load_space
    returns a space or raises SpaceError starting with the file's path (issue 18)."""
    import yaml
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = st.sampled_from(
        [
            "name",
            "budget",
            "fixed",
            "parameters",
            "scheduler",
            "searcher",
            "resources",
            "metric",
            "mode",
            "type",
            "low",
            "high",
            "log",
            "choices",
            "when",
            "lr",
            "arch",
            "num_samples",
            "max_epochs",
            "step",
            "encoder",
            "x",
        ]
    ) | st.text(max_size=6)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-5, 5)
        | st.floats(allow_nan=True)
        | st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=20,
    )
    path = tmp_path / "space.yaml"
    refused: list[str] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.dictionaries(keys, values, max_size=8), st.text(max_size=200)))
    def check(doc: object) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        path.write_text(text, encoding="utf-8")
        try:
            load_space(path)
        except SpaceError as exc:
            assert str(exc).startswith(str(path)), str(exc)
            refused.append(str(exc))

    check()
    assert refused  # the fuzzing reached the error paths


# ---- grid searcher -----------------------------------------------------------------------------

GRID_PARAMS = {
    "arch": {"type": "categorical", "choices": ["unet", "fpn"]},
    "loss": {"type": "categorical", "choices": ["bce", "dice", "lovasz+bce"]},
}


def test_a_grid_space_samples_each_combination_once() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space_from_dict(
        with_changes(searcher={"type": "grid"}, budget={"num_samples": 6}, parameters=GRID_PARAMS)
    )
    assert space.grid() == {"arch": ["unet", "fpn"], "loss": ["bce", "dice", "lovasz+bce"]}
    study = optuna.create_study(sampler=space.build_sampler(), direction="maximize")
    define = space.define_by_run()

    def objective(trial: optuna.Trial) -> float:
        define(trial)
        return 0.5

    study.optimize(objective, n_trials=6)
    pairs = [(t.params["arch"], t.params["loss"]) for t in study.trials]
    assert sorted(pairs) == sorted(
        (a, b) for a in ("unet", "fpn") for b in GRID_PARAMS["loss"]["choices"]
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"budget": {"num_samples": 4}},
            r"budget.num_samples: the grid has 6 combinations.*num_samples: 6",
        ),
        (
            {"parameters": {**GRID_PARAMS, "lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
            r"parameters.lr: searcher type grid takes categorical parameters.*got type float",
        ),
        ({"parameters": {}}, r"parameters: searcher type grid needs at least one parameter"),
        (
            {
                "parameters": {
                    **GRID_PARAMS,
                    "augment": {
                        "type": "categorical",
                        "choices": ["em", "robust"],
                        "when": {"arch": ["fpn"]},
                    },
                }
            },
            r"parameters.augment: .*got type categorical with a condition",
        ),
    ],
)
def test_a_grid_space_is_refused_up_front(changes: dict[str, Any], message: str) -> None:
    values = with_changes(
        searcher={"type": "grid"}, budget={"num_samples": 6}, parameters=GRID_PARAMS
    )
    values.update(changes)
    with pytest.raises(SpaceError, match=message):
        space_from_dict(values, source="g.yaml")


def test_a_space_samples_the_synthetic_mix_cycle_as_text() -> None:
    """synthetic_kinds is a list field; a categorical choice is one comma string of it (KIND*N:
    N times), which Optuna can store and the trials table shows as written."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cycles = ["tem,stem,sem,dense-small-carbon*3", "tem,stem,sem,dense-small-carbon*6"]
    space = space_from_dict(
        with_changes(
            searcher={"type": "grid"},
            budget={"num_samples": 2},
            fixed={"tile_size": 128, "batch_size": 4, "synthetic_mix": 1.0},
            parameters={"synthetic_kinds": {"type": "categorical", "choices": cycles}},
        )
    )
    study = optuna.create_study(sampler=space.build_sampler(), direction="maximize")
    define = space.define_by_run()
    seen = {}

    def objective(trial: optuna.Trial) -> float:
        define(trial)
        cfg = space.trial_config(space.sampled_params(trial.params))
        seen[trial.params["synthetic_kinds"]] = cfg.synthetic_kinds
        return 0.5

    study.optimize(objective, n_trials=2)
    base = ("tem", "stem", "sem")
    assert seen == {
        cycles[0]: (*base, *["dense-small-carbon"] * 3),
        cycles[1]: (*base, *["dense-small-carbon"] * 6),
    }
    bad = with_changes(
        parameters={"synthetic_kinds": {"type": "categorical", "choices": ["tem,dense*2"]}}
    )
    with pytest.raises(
        SpaceError, match=r"parameters.synthetic_kinds.*unknown synthetic kind.*'dense'"
    ):
        space_from_dict(bad, source="k.yaml")
