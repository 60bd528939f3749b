"""Search-space parameter specs (float, int, categorical) and the load-time checks on them.

A spec draws one value, through Optuna (``suggest``) or a numpy Generator
(``sample``), given the values drawn before it (read by ``when`` and ``depends_on``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    import optuna

    from emseg_search.space import SearchSpace

Scalar = str | bool | int | float | None  # what an Optuna categorical choice may be
_SCALARS = (str, bool, int, float, type(None))


class Frozen(BaseModel):
    """Immutable; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _scalars(values: Any, where: str) -> Any:
    """``values`` if it is a non-empty list of distinct scalars, else ValueError."""
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{where} must be a non-empty list, got {values!r}")
    for i, v in enumerate(values):
        if not isinstance(v, _SCALARS):
            raise ValueError(f"{where}[{i}] must be a string, number, bool or null, got {v!r}")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{where} lists a value twice: {list(values)}")
    return values


class Param(Frozen):
    """Common to every spec: drawn only if each ``when`` field holds one of its listed values."""

    when: dict[str, tuple[Scalar, ...]] = Field(default_factory=dict)

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if not isinstance(value, Mapping | None):
            raise ValueError(f"`when` maps fields to values, e.g. {{arch: [unet]}}, got {value!r}")
        return {
            k: _scalars(v if isinstance(v, list | tuple) else [v], f"when.{k}")
            for k, v in (value or {}).items()
        }

    @property
    def parents(self) -> tuple[str, ...]:
        """Fields read before this one is drawn."""
        return tuple(self.when)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether it is drawn, given every field's value so far."""
        return all(values[name] in allowed for name, allowed in self.when.items())

    def optuna_name(self, field: str, values: Mapping[str, Any]) -> str:
        """The Optuna parameter name (Optuna wants one distribution per name)."""
        return field


class _Range(Param):
    """Shared checks of float and int ranges."""

    @model_validator(mode="after")
    def _check_range(self) -> _Range:
        lo, hi, step = self.low, self.high, self.step
        if not lo < hi:
            raise ValueError(f"`low < high` must hold, got low={lo}, high={hi}")
        if self.log and lo <= 0:
            raise ValueError(f"`low > 0` must hold with log: true, got low={lo}")
        if step is not None:
            if self.log:
                raise ValueError(f"`step` and `log: true` exclude each other, got step={step}")
            if step <= 0:
                raise ValueError(f"`step > 0` must hold, got step={step}")
            n = (hi - lo) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, n):
                raise ValueError(
                    f"`high - low` must be a multiple of `step`, got low={lo}, high={hi}, "
                    f"step={step}"
                )
        return self


class FloatParam(_Range):
    """A float in [low, high], on a log scale or a grid of ``step`` if asked."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def values(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The bounds (what load-time checks try)."""
        return (self.low, self.high)

    def suggest(self, trial: optuna.Trial, name: str, values: Mapping[str, Any]) -> float:
        """Draw through Optuna."""
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def sample(self, rng: np.random.Generator, values: Mapping[str, Any]) -> float:
        """Draw uniformly (in log space with log: true)."""
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.step is None:
            return float(rng.uniform(self.low, self.high))
        k = int(rng.integers(0, round((self.high - self.low) / self.step) + 1))
        return float(min(self.high, round(self.low + k * self.step, 12)))


class IntParam(_Range):
    """An int in [low, high] (both included), on a log scale or a grid of ``step`` if asked."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = None

    def values(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Every value (load-time checks enumerate them)."""
        return tuple(range(self.low, self.high + 1, self.step or 1))

    def suggest(self, trial: optuna.Trial, name: str, values: Mapping[str, Any]) -> int:
        """Draw through Optuna."""
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step or 1)

    def sample(self, rng: np.random.Generator, values: Mapping[str, Any]) -> int:
        """Draw uniformly (in log space with log: true)."""
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return min(self.high, int(x))
        step = self.step or 1
        return self.low + step * int(rng.integers(0, (self.high - self.low) // step + 1))


class CategoricalParam(Param):
    """One of ``choices``; with ``depends_on: f``, choices maps each value of f to a list."""

    type: Literal["categorical"]
    choices: tuple[Scalar, ...] | dict[Scalar, tuple[Scalar, ...]]
    depends_on: str | None = None

    @field_validator("choices", mode="before")
    @classmethod
    def _check_choices(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return _scalars(value, "choices")
        for key, branch in value.items():
            _scalars([key], "choices: key")
            _scalars(branch, f"choices.{key}")
        return value

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if (self.depends_on is None) != (not isinstance(self.choices, dict)):
            raise ValueError(
                "`depends_on: f` goes with `choices` mapping each value of f to a list, e.g. "
                "{depends_on: arch, choices: {unet: [resnet18], fpn: [resnet34]}}"
            )
        return self

    @property
    def parents(self) -> tuple[str, ...]:
        """Fields read before this one is drawn (``when`` keys, then ``depends_on``)."""
        return (*self.when, *([self.depends_on] if self.depends_on else []))

    @property
    def all_choices(self) -> tuple[Scalar, ...]:
        """Every value it may take, over all branches, in first-seen order."""
        if not isinstance(self.choices, dict):
            return self.choices
        return tuple(dict.fromkeys(v for branch in self.choices.values() for v in branch))

    def branches(self) -> dict[Scalar, tuple[Scalar, ...]]:
        """{parent value: choices}, or {None: choices} without depends_on."""
        return self.choices if isinstance(self.choices, dict) else {None: self.choices}

    def values(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The choices, given the values so far."""
        return self.choices[values[self.depends_on]] if self.depends_on else self.choices

    def active(self, values: Mapping[str, Any]) -> bool:
        """``when`` holds and, with depends_on, the parent's value has a list of choices."""
        if self.depends_on is not None and values[self.depends_on] not in self.choices:
            return False
        return super().active(values)

    def optuna_name(self, field: str, values: Mapping[str, Any]) -> str:
        """``field``, or ``field|parent=value`` per depends_on branch (fixed choices per name)."""
        if self.depends_on is None:
            return field
        return branch_name(field, self.depends_on, values[self.depends_on])

    def suggest(self, trial: optuna.Trial, name: str, values: Mapping[str, Any]) -> Any:
        """Draw through Optuna."""
        return trial.suggest_categorical(name, list(self.values(values)))

    def sample(self, rng: np.random.Generator, values: Mapping[str, Any]) -> Any:
        """Draw uniformly."""
        choices = self.values(values)
        return choices[int(rng.integers(len(choices)))]


def branch_name(field: str, parent: str, value: Any) -> str:
    """Optuna name of one ``depends_on`` branch, e.g. ``encoder|arch=unet``."""
    return f"{field}|{parent}={value}"


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
KINDS: dict[str, type[Param]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


# ---- load-time checks, run by SearchSpace's validator; each returns '<key.path>: ...' lines ----

_STRIDED = ("deeplabv3", "deeplabv3plus")  # the archs that take output_stride (build_model)


class Problems(ValueError):
    """Several problems found at once, each '<key.path>: <message>'."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def format_errors(
    exc: ValidationError,
    path: Callable[[str], str],
    keys: Callable[[tuple[Any, ...]], list[str]] = lambda loc: [],
) -> list[str]:
    """pydantic errors -> '<key.path>: <message>' lines.

    ``path`` maps an error location ('a.b') to its key path; ``keys(loc)`` lists the keys
    valid where an unknown key was found.
    """
    lines = []
    for err in exc.errors():
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, Problems):
            lines += cause.lines
            continue
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 3 and loc[0] == "parameters" and loc[2] in KINDS:
            del loc[2]  # the discriminator tag pydantic puts in the location
        msg, kind, given = err["msg"].removeprefix("Value error, "), err["type"], err.get("input")
        if kind == "extra_forbidden":
            msg = f"unknown key; valid keys: {', '.join(keys(err['loc']))}"
        elif kind.startswith("union_tag_"):
            msg = f"`type` must be one of {', '.join(KINDS)}, got {given.get('type')!r}"
        elif kind != "missing" and not isinstance(given, dict | None):
            msg = f"{msg} (got {given!r})"
        lines.append(f"{path('.'.join(loc))}: {msg}")
    return lines


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
        from emseg_search.models import check_encoder

        try:  # unet takes every smp and timm encoder: this checks the name alone
            check_encoder(TrialConfig(arch="unet", encoder=value))
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("encoder: ")) from None
    elif field == "loss":
        from emseg_search.losses import build_loss

        build_loss(value)
    else:
        from emseg_search.augment import AUGMENTATIONS
        from emseg_search.models import ARCHITECTURES

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
    if is_choice and isinstance(value, str) and not isinstance(coerced, str):
        return f"{value!r} is text, not a number (YAML: write 1.0e-4, not 1e-4)"
    if field in ("arch", "encoder", "loss", "augment"):
        try:
            _check_name(field, value)
        except ValueError as exc:
            return str(exc)
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
    from emseg_search.models import check_encoder, check_input_size, min_batch_size
    from emseg_search.weights import offline_entry

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
