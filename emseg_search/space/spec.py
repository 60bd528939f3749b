"""Search-space YAML -> typed SearchSpace -> Optuna define-by-run (and plain random search).

A space is checked once, when loaded: unknown keys, bounds, registry names, references to later
parameters, and every reachable arch x encoder x weights x tile combination (no model is built).
Parameters are drawn in file order; ``when`` / ``depends_on`` read values drawn earlier or fixed.
Optuna wants one distribution per name, so a ``depends_on`` parameter gets one Optuna name per
branch (``encoder|arch=unet``); ``sampled_params`` maps those back to TrialConfig fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from emseg_search.config import SYNTHETIC, TrialConfig, yaml_problem
from emseg_search.space.errors import Problems, SpaceError, format_errors
from emseg_search.space.params import KINDS, CategoricalParam, Frozen, Param, ParamSpec, branch_name
from emseg_search.space.sections import SECTIONS, Budget, Resources, Scheduler, Searcher

if TYPE_CHECKING:
    import optuna

SET_ELSEWHERE = {"epochs": "scheduler.max_epochs", "data": "the top-level `data` key"}
MODEL_FIELDS = ("arch", "encoder", "encoder_depth", "output_stride", "encoder_weights")
INPUT_FIELDS = ("tile_size", "batch_size")  # checked with MODEL_FIELDS per combination
SMOKE_FIXED = {"tiles_per_image": 1, "batch_size": 2, "val_every": 1}  # + tile_size, warmup
_MAX_COMBINATIONS = 20_000
_STRIDED = ("deeplabv3", "deeplabv3plus")  # the archs that take output_stride (build_model)
_WORD = {"max": "high", "min": "low"}


class SearchSpace(Frozen):
    """A validated search space: what to sample, what to hold fixed, and how to search."""

    name: str = Field(min_length=1)
    description: str | None = None
    data: str = SYNTHETIC  # a data folder or 'synthetic'; the CLI's --data wins
    # what is optimised; with `objectives`, the one metric ASHA stops trials on
    metric: str = "val_iou"
    mode: Literal["max", "min"] = "max"
    # several metrics to optimise at once ({metric: max | min}, or a list: each better-high but
    # val_count_error and val_ms_per_megapixel); the Pareto front is marked in trials.parquet
    objectives: dict[str, Literal["max", "min"]] | None = None
    budget: Budget
    resources: Resources = Field(default_factory=Resources)
    scheduler: Scheduler
    searcher: Searcher = Field(default_factory=Searcher)
    fixed: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)

    _source: str = PrivateAttr("space")

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives_mapping(cls, value: Any) -> Any:
        """A list of metric names is each metric with the direction that is better for it."""
        from emseg_search.results.schemas import OBJECTIVES

        if not isinstance(value, list | tuple):
            return value
        names = [v for v in value if isinstance(v, str)]
        if len(names) != len(value):
            raise ValueError(
                "`objectives` lists metric names or maps each to max | min, e.g. "
                "{val_iou: max, val_count_error: min}"
            )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"`objectives` lists {', '.join(twice)} twice")
        return {n: OBJECTIVES.get(n, "max") for n in names}

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        problems = (
            self._name_problems()
            or self._base_problems()
            or check_values(self)
            or check_references(self)
            or check_models(self, (*MODEL_FIELDS, *INPUT_FIELDS))
            or self._grid_problems()
        )
        if problems:
            raise Problems(problems)
        return self

    def _name_problems(self) -> list[str]:
        valid = f"valid fields: {', '.join(sorted(TrialConfig.model_fields))}"
        out = []
        for section, names in (("fixed", self.fixed), ("parameters", self.parameters)):
            for name in names:
                if name in SET_ELSEWHERE:
                    out.append(f"{section}.{name}: set by {SET_ELSEWHERE[name]}, not here")
                elif name not in TrialConfig.model_fields:
                    out.append(f"{section}.{name}: not a TrialConfig field; {valid}")
                elif section == "parameters" and name in self.fixed and not names[name].parents:
                    out.append(
                        f"parameters.{name}: also in `fixed`, but always sampled; keep one "
                        "(a fixed value is the fallback of a `when`/`depends_on` parameter)"
                    )
        return out

    def _grid_problems(self) -> list[str]:
        """A ``grid`` search walks every combination of categorical choices once."""
        if self.searcher.type != "grid":
            return []
        out = [
            f"parameters.{field}: searcher type grid takes categorical parameters without "
            f"`when`/`depends_on` (a list of `choices`), got type {spec.type}"
            + (" with a condition" if spec.type == "categorical" else "")
            for field, spec in self.parameters.items()
            if not isinstance(spec, CategoricalParam) or spec.parents
        ]
        if not self.parameters:
            out.append("parameters: searcher type grid needs at least one parameter")
        if out:
            return out
        points = math.prod(len(spec.choices) for spec in self.parameters.values())
        if self.budget.num_samples != points:
            out.append(
                f"budget.num_samples: the grid has {points} combinations, each run once; "
                f"set num_samples: {points} (got {self.budget.num_samples})"
            )
        return out

    def _base_problems(self) -> list[str]:
        try:
            TrialConfig.model_validate(self.fixed_config())
        except ValidationError as exc:
            where = {"epochs": "scheduler.max_epochs", "data": "data", "": "fixed"}
            return format_errors(exc, lambda f: where.get(f, f"fixed.{f}"))
        if self.fixed.get("val_fraction") == 0 and not self.fixed.get("val_file"):
            return [
                "fixed.val_fraction: 0 leaves no validation images, and a search ranks its "
                "trials by validation scores; use 0 < val_fraction < 1 or a val_file"
            ]
        return self._metric_problems()

    def _metric_problems(self) -> list[str]:
        from emseg_search.results.schemas import SCALAR_EPOCH_METRICS

        valid = [
            m
            for m in SCALAR_EPOCH_METRICS
            if m.startswith("val_") and m not in ("val_epoch", "val_seconds")
        ]
        if self.metric not in valid:
            return [
                f"metric: {self.metric!r} is not reported by training; valid: {', '.join(valid)}"
            ]
        shifts = self.fixed.get("val_shifts") or "val_shifts" in self.parameters
        if self.metric == "val_robust_iou" and not shifts:
            return [
                "metric: val_robust_iou is only reported with `fixed.val_shifts` (the shifts "
                "to score the validation images under, e.g. [scale_x0.5, scale_x2, dose_20])"
            ]
        better = _better(self.metric)
        if better not in (None, self.mode):
            return [
                f"mode: {self.metric} is better {_WORD[better]}, so `mode: {self.mode}` would "
                f"search for the worst models; set `mode: {better}`"
            ]
        return self._objective_problems(bool(shifts))

    def _objective_problems(self, shifts: bool) -> list[str]:
        from emseg_search.results.schemas import OBJECTIVES

        if self.objectives is None:
            return []
        if len(self.objectives) < 2:
            return [
                f"objectives: name 2 or more metrics, got {list(self.objectives)}; a single "
                "objective is `metric` and `mode`"
            ]
        out = []
        for name, mode in self.objectives.items():
            if name not in OBJECTIVES:
                out.append(f"objectives.{name}: not an objective; valid: {', '.join(OBJECTIVES)}")
            elif mode != OBJECTIVES[name]:
                out.append(
                    f"objectives.{name}: {name} is better {_WORD[OBJECTIVES[name]]}, so `{mode}` "
                    f"would search for the worst models; write `{name}: {OBJECTIVES[name]}`"
                )
            elif name == "val_robust_iou" and not shifts:
                out.append(
                    "objectives.val_robust_iou: only reported with `fixed.val_shifts` (the "
                    "shifts to score the validation images under)"
                )
        return out

    def fixed_config(self) -> dict[str, Any]:
        """The fixed fields plus ``data`` and ``epochs`` (= scheduler.max_epochs)."""
        return {**self.fixed, "data": self.data, "epochs": self.scheduler.max_epochs}

    def base_values(self) -> dict[str, Any]:
        """Every TrialConfig field before sampling: defaults overridden by ``fixed_config``."""
        return TrialConfig.model_validate(self.fixed_config()).model_dump()

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every field that may be sampled, in file order (``params_<name>`` columns)."""
        return tuple(self.parameters)

    def _walk(self, pick: Callable[[str, Param, dict[str, Any]], Any]) -> dict[str, Any]:
        """Draw the parameters in file order with ``pick``; {field: value} of those drawn."""
        values, drawn = self.base_values(), {}
        for field, spec in self.parameters.items():
            if spec.active(values):
                values[field] = drawn[field] = pick(field, spec, values)
        return drawn

    def grid(self) -> dict[str, list[Any]] | None:
        """{parameter: choices} a ``grid`` searcher walks through (None for other searchers)."""
        if self.searcher.type != "grid":
            return None
        return {field: list(spec.choices) for field, spec in self.parameters.items()}

    def build_sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of ``searcher`` for this space."""
        return self.searcher.build_sampler(self.grid())

    def define_by_run(self) -> Callable[[optuna.Trial], dict[str, Any] | None]:
        """Optuna define-by-run function (OptunaSearch(space=...)): suggests, returns None."""
        return _DefineByRun(self)

    def random_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """One uniform random draw honouring ``when`` and ``depends_on``: {field: value}."""
        return self._walk(lambda field, spec, values: spec.sample(rng, values))

    def optuna_names(self) -> dict[str, str]:
        """Every name a sampler may use (plain field names included) -> its field."""
        names = {}
        for field, spec in self.parameters.items():
            names[field] = field
            if isinstance(spec, CategoricalParam) and spec.depends_on:
                names.update({branch_name(field, spec.depends_on, k): field for k in spec.choices})
        return names

    def sampled_params(self, trial_params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna/Tune params (maybe 'encoder|arch=unet') -> {field: value}, checked, file order."""
        names, given, keys = self.optuna_names(), {}, {}
        for key, value in trial_params.items():
            field = names.get(key)
            if field is None or field in given:
                why = (
                    f"{keys[field]!r} and {key!r} both give {field}"
                    if field
                    else (f"unknown parameter {key!r}; this space samples: {', '.join(names)}")
                )
                raise SpaceError(f"{self._source}: params: {why}")
            given[field], keys[field] = value, key
        values, problems = self.base_values(), []
        for field, spec in self.parameters.items():
            active = spec.active(values)
            if field in given and not active:
                problems.append(f"{field}: given, but its `when`/`depends_on` does not hold")
            elif active and field not in given:
                problems.append(f"{field}: missing (its `when`/`depends_on` holds)")
            elif active:
                name = spec.optuna_name(field, values)
                if keys[field] not in (field, name):
                    problems.append(f"{field}: given as {keys[field]!r}, expected {name!r}")
                elif isinstance(spec, CategoricalParam) and given[field] not in spec.values(values):
                    problems.append(f"{field}: {given[field]!r} is not among {spec.values(values)}")
                values[field] = given[field]
        if problems:
            raise SpaceError("\n".join(f"{self._source}: params: {p}" for p in problems))
        return {field: given[field] for field in self.parameters if field in given}

    def trial_config(self, params: Mapping[str, Any], data: str | None = None) -> TrialConfig:
        """fixed + sampled ``params`` + epochs=scheduler.max_epochs (+ ``data`` override)."""
        values = {**self.fixed_config(), **self.sampled_params(params)}
        return TrialConfig.from_dict({**values, **({"data": data} if data else {})}, self._source)

    def relevant(self, fields: Iterable[str]) -> list[str]:
        """``fields`` plus what their parameters' ``when`` / ``depends_on`` read, sorted."""
        relevant = set(fields)
        for field, spec in reversed(self.parameters.items()):
            if field in relevant:
                relevant.update(spec.parents)
        return sorted(relevant)

    def combinations(self, fields: Iterable[str]) -> list[dict[str, Any]]:
        """Each distinct reachable assignment of ``fields`` (as all TrialConfig values)."""
        relevant, worlds = self.relevant(fields), [self.base_values()]
        for field, spec in self.parameters.items():
            if field in relevant:
                worlds = [
                    {**w, field: v} if spec.active(w) else w
                    for w in worlds
                    for v in (spec.values(w) if spec.active(w) else (None,))
                ]
            if len(worlds) > _MAX_COMBINATIONS:
                raise Problems([f"parameters: over {_MAX_COMBINATIONS} combinations of {relevant}"])
        return list({tuple(w[k] for k in relevant): w for w in worlds}.values())

    def value_sites(self) -> Iterator[tuple[str, str, Any, bool]]:
        """(key path, field, value, is a choice) of every fixed value, choice and bound."""
        for field, value in self.fixed.items():
            yield f"fixed.{field}", field, value, False
        for field, spec in self.parameters.items():
            if isinstance(spec, CategoricalParam):
                for key, branch in spec.branches().items():
                    path = f"parameters.{field}.choices" + ("" if key is None else f".{key}")
                    yield from ((path, field, v, True) for v in branch)
            else:
                yield f"parameters.{field}.low", field, spec.low, False
                yield f"parameters.{field}.high", field, spec.high, False

    def smoke_test(self) -> SearchSpace:
        """The space shrunk to 2 trials x 1 epoch with small tiles and batches, no time budget
        (a grid's 2 trials are drawn from its combinations at random)."""
        from emseg_search.models.registry import min_input_size, required_stride

        cfgs = [TrialConfig.model_validate(v) for v in self.combinations(MODEL_FIELDS)]
        step = math.lcm(*(required_stride(cfg) for cfg in cfgs))
        low = max(64, *(min_input_size(cfg) for cfg in cfgs))
        warmup = min(self.base_values()["warmup_epochs"], 1.0)
        shrunk = {**SMOKE_FIXED, "tile_size": -(-low // step) * step, "warmup_epochs": warmup}
        values = self.model_dump()
        values["fixed"].update(shrunk)
        values["parameters"] = {k: v for k, v in values["parameters"].items() if k not in shrunk}
        values["budget"].update(num_samples=2, time_budget_s=None)
        values["scheduler"].update(max_epochs=1, grace_period=1)
        if values["searcher"]["type"] == "grid":  # 2 trials of it, not every combination
            values["searcher"]["type"] = "random"
        return space_from_dict(values, source=f"{self._source} (smoke test)")

    def with_fixed(self, **values: Any) -> SearchSpace:
        """The space with more fixed fields (command-line overrides such as ``group_by``),
        validated like the file; a field the space samples cannot be fixed this way."""
        sampled = sorted(set(values) & set(self.parameters))
        if sampled:
            raise Problems(
                [f"parameters.{n}: sampled by the space; cannot fix it" for n in sampled]
            )
        dumped = self.model_dump()
        dumped["fixed"].update(values)
        return space_from_dict(dumped, source=self._source)

    def to_dict(self) -> dict[str, Any]:
        """The resolved space (defaults filled in), JSON-serialisable (for experiment.json)."""
        return self.model_dump(mode="json")


class _DefineByRun:
    """Picklable define-by-run function (Ray's OptunaSearch.save pickles it)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        """Suggest each active parameter under its Optuna name; no constants to return."""
        self.space._walk(lambda f, spec, vals: spec.suggest(trial, spec.optuna_name(f, vals), vals))


def _better(metric: str) -> str | None:
    """'max' or 'min' for a metric that is an objective (results.schemas.OBJECTIVES), else None."""
    from emseg_search.results.schemas import OBJECTIVES

    return OBJECTIVES.get(metric)


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed where the unknown key at ``loc`` was found."""
    parent = [str(p) for p in loc[:-1]]
    if not parent:
        return list(SearchSpace.model_fields)
    if len(parent) == 1 and parent[0] in SECTIONS:
        return list(SECTIONS[parent[0]].model_fields)
    if len(parent) == 3 and parent[0] == "parameters" and parent[2] in KINDS:
        return list(KINDS[parent[2]].model_fields)
    return []


def space_from_dict(values: Mapping[str, Any], source: str = "space") -> SearchSpace:
    """Validate a plain dict; SpaceError lines read '<source>: <key.path>: <problem>'."""
    if not isinstance(values, Mapping):
        raise SpaceError(f"{source}: expected a mapping of keys, got {type(values).__name__}")
    try:
        space = SearchSpace.model_validate(dict(values))
    except ValidationError as exc:
        lines = format_errors(exc, lambda loc: loc or "(top level)", _valid_keys)
        raise SpaceError("\n".join(f"{source}: {line}" for line in lines)) from None
    space._source = source
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; errors start with the file's path."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpaceError(f"{path}: cannot read YAML: {yaml_problem(exc)}") from None
    return space_from_dict({} if values is None else values, source=str(path))


# Load-time checks, run by SearchSpace's validator. Each returns '<key.path>: <message>'
# lines, so that one run of the validator reports every problem in a YAML file at once.


def _possible(space: SearchSpace, name: str) -> tuple[Any, ...] | None:
    """Values ``name`` can hold when a later parameter reads it (None: not categorical)."""
    base = space.base_values()
    spec = space.parameters.get(name)
    if spec is None:
        return (base[name],)
    if not isinstance(spec, CategoricalParam):
        return None
    return spec.all_choices + ((base[name],) if spec.parents else ())  # may keep its fallback


def check_references(space: SearchSpace) -> list[str]:
    """``when`` / ``depends_on`` name earlier categorical parameters or fixed fields, sanely."""
    out, earlier = [], []
    for field, spec in space.parameters.items():
        depends_on = getattr(spec, "depends_on", None)
        for parent in spec.parents:
            is_dep = parent == depends_on
            key = f"parameters.{field}.{'depends_on' if is_dep else f'when.{parent}'}"
            if parent not in earlier and (parent in space.parameters or parent not in space.fixed):
                if parent == field:
                    out.append(f"{key}: `{field}` cannot depend on itself")
                elif parent in space.parameters:
                    out.append(
                        f"{key}: `{parent}` is sampled after `{field}` (file order); move "
                        f"`{field}` below `{parent}`"
                    )
                else:
                    out.append(
                        f"{key}: `{parent}` is neither an earlier parameter nor a fixed field; "
                        f"earlier parameters: {earlier}; fixed: {list(space.fixed)}"
                    )
                continue
            possible = _possible(space, parent)
            if possible is None:
                out.append(
                    f"{key}: `{parent}` is not categorical; only categorical "
                    "parameters and fixed fields can be conditioned on"
                )
                continue
            wanted = tuple(spec.choices if is_dep else spec.when[parent])
            for value in wanted:
                problem = _value_problem(space.fixed_config(), parent, value, True)
                if problem:
                    out.append(f"{key}: {problem}")
                elif is_dep and "/" in str(value):  # Ray's unflatten_dict splits names at '/'
                    out.append(f"{key}: {value!r}: a '/' in a branch name breaks Ray")
            if not any(value in possible for value in wanted):
                fixed = parent not in space.parameters
                taken = f"is fixed to {possible[0]!r}" if fixed else f"takes {list(possible)}"
                out.append(f"{key}: never sampled: `{parent}` {taken}, none of {list(wanted)}")
        earlier.append(field)
    return out


def _check_name(field: str, value: Any) -> None:
    """Raise ValueError (listing the valid names) if ``value`` is not a registered ``field``."""
    if field == "encoder":
        from emseg_search.config import TrialConfig
        from emseg_search.models.registry import check_encoder

        try:  # unet takes every smp and timm encoder: this checks the name alone
            check_encoder(TrialConfig(arch="unet", encoder=value))
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("encoder: ")) from None
    elif field == "loss":
        from emseg_search.losses import build_loss

        build_loss(value)
    else:
        from emseg_search.augment import AUGMENTATIONS
        from emseg_search.models.registry import ARCHITECTURES

        names = {"arch": ARCHITECTURES, "augment": AUGMENTATIONS}[field]
        if value not in names:
            raise ValueError(f"unknown {field} {value!r}; valid: {', '.join(sorted(names))}")


def _value_problem(base: dict[str, Any], field: str, value: Any, is_choice: bool) -> str | None:
    """Why ``value`` is not a valid ``field`` (TrialConfig rules, registries), or None."""
    from emseg_search.config import TrialConfig

    try:
        coerced = getattr(TrialConfig.model_validate({**base, field: value}), field)
    except ValidationError as exc:
        return "; ".join(e.removeprefix(": ") for e in format_errors(exc, lambda _: ""))
    if is_choice and isinstance(value, str) and isinstance(coerced, int | float):
        return f"{value!r} is text, not a number (YAML: write 1.0e-4, not 1e-4)"
    if field in ("arch", "encoder", "loss", "augment"):
        try:
            _check_name(field, value)
        except ValueError as exc:
            return str(exc)
    if field == "val_shifts":
        from emseg_search.data.shifts import check_val_shifts

        try:
            check_val_shifts(coerced)
        except ValueError as exc:
            return str(exc).removeprefix("val_shifts: ")
    return None


def check_values(space: SearchSpace) -> list[str]:
    """Each fixed value, choice and bound is a valid TrialConfig value and a registered name."""
    base, out = space.fixed_config(), []
    for path, field, value, is_choice in space.value_sites():
        problem = _value_problem(base, field, value, is_choice)
        out += [f"{path}: {problem}"] if problem else []
    return out


def check_models(space: SearchSpace, fields: tuple[str, ...]) -> list[str]:
    """Each reachable arch x encoder x weights x tile x batch combination builds and fits."""
    from emseg_search.config import TrialConfig
    from emseg_search.models.pretrained import offline_entry
    from emseg_search.models.registry import check_encoder, check_input_size, min_batch_size

    relevant = space.relevant(fields)
    shown = [f for f in space.parameters if f in relevant]
    failures = []
    for values in space.combinations(fields):
        try:
            cfg = TrialConfig.model_validate(values)
            check_encoder(cfg)
            check_input_size(cfg)
            if cfg.output_stride is not None and cfg.arch not in _STRIDED:
                raise ValueError(
                    f"output_stride: only {', '.join(_STRIDED)} take one, got output_stride="
                    f"{cfg.output_stride} for arch {cfg.arch!r}; sample it with "
                    f"`when: {{arch: [{', '.join(_STRIDED)}]}}`"
                )
            if cfg.batch_size < min_batch_size(cfg):
                raise ValueError(
                    f"batch_size: arch {cfg.arch!r} needs at least {min_batch_size(cfg)} images "
                    f"per batch per worker (BatchNorm on 1x1 maps), got {cfg.batch_size}"
                )
            if cfg.encoder_weights == "imagenet-offline":
                offline_entry(cfg.encoder)
        except ValueError as exc:
            combo = ", ".join(f"{f}={values[f]!r}" for f in shown) or "(fixed)"
            failures.append(f"parameters: combination {combo}: {exc}")
    more = [f"parameters: ... and {len(failures) - 5} more"] if len(failures) > 5 else []
    return failures[:5] + more
