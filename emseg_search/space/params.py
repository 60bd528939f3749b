"""Search-space parameter specs: float, int and categorical (the checks are in space_checks).

A spec draws one value, through Optuna (``suggest``) or a numpy Generator
(``sample``), given the values drawn before it (read by ``when`` and ``depends_on``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    import optuna


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
