"""The sections of a search space besides its parameters: budget, resources, scheduler and
searcher (each a frozen pydantic model; unknown keys are errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from emseg_search.space.params import Frozen

if TYPE_CHECKING:
    import optuna


class Budget(Frozen):
    """How many trials, for how long, and how many at once."""

    num_samples: int = Field(ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: sized from the cluster


class Resources(Frozen):
    """What one trial's training run asks for.

    ``runner``: ``auto`` trains a 1-worker trial inside its Tune trial process (nothing to
    make data-parallel, and it saves the Train worker group's start-up, ~7 s a trial on
    2 cores) and a multi-worker trial with a Ray Train TorchTrainer (DDP); ``train`` always
    uses a TorchTrainer.
    """

    workers: int = Field(1, ge=1)  # Train workers (DDP ranks) per trial
    cpus_per_worker: int = Field(1, ge=1)  # also the torch threads per worker
    gpus_per_worker: float = Field(0.0, ge=0)
    runner: Literal["auto", "train"] = "auto"

    @property
    def inline(self) -> bool:
        """Whether a trial trains in its own Tune process rather than a TorchTrainer."""
        return self.runner == "auto" and self.workers == 1


class Scheduler(Frozen):
    """Epochs per trial and early stopping (ASHA over epochs, or none)."""

    type: Literal["asha", "none"] = "asha"
    max_epochs: int = Field(ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = 2.0

    @model_validator(mode="after")
    def _check(self) -> Scheduler:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                f"`grace_period <= max_epochs` must hold, got grace_period="
                f"{self.grace_period}, max_epochs={self.max_epochs}"
            )
        if not self.reduction_factor > 1:
            raise ValueError(
                f"`reduction_factor > 1` must hold, got reduction_factor={self.reduction_factor}"
            )
        return self


class Searcher(Frozen):
    """Optuna's samplers, seeded: TPE (``optuna``), NSGA-II (``nsga2``), random sampling, or
    every combination of categorical choices once (``grid``: a small, planned comparison).

    Each of them takes one objective or several (the space's ``objectives``).
    """

    type: Literal["optuna", "nsga2", "random", "grid"] = "optuna"
    seed: int = 0
    # TPE's options
    n_startup_trials: int = Field(5, ge=0)  # random trials before TPE takes over
    constant_liar: bool = True  # parallel trials steer away from each other's pending points
    multivariate: bool = True
    group: bool = True  # multivariate TPE per conditional sub-space (Optuna's `group`)
    # NSGA-II's: trials per generation (null: Optuna's default, 50)
    population_size: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _check(self) -> Searcher:
        if self.group and not self.multivariate:
            raise ValueError("`group: true` needs `multivariate: true`; set group: false")
        if self.population_size is not None and self.type != "nsga2":
            raise ValueError(
                f"`population_size` is NSGA-II's (type: nsga2), got type: {self.type}; remove it"
            )
        return self

    def build_sampler(
        self, grid: dict[str, list[Any]] | None = None
    ) -> optuna.samplers.BaseSampler:
        """The Optuna sampler these settings describe; ``grid`` ({Optuna name: values}, from
        ``SearchSpace.grid``) is what type ``grid`` walks through."""
        import warnings

        import optuna

        if self.type == "grid":
            if not grid:
                raise ValueError("searcher type grid needs the space's grid (SearchSpace.grid)")
            from emseg_search.space.samplers import GridSampler

            return GridSampler(grid, seed=self.seed)
        if self.type == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if self.type == "nsga2":
            from emseg_search.space.samplers import NSGAIISampler

            size = {} if self.population_size is None else {"population_size": self.population_size}
            return NSGAIISampler(seed=self.seed, **size)
        with warnings.catch_warnings():  # `group` is chosen on purpose: no "experimental" noise
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed,
                n_startup_trials=self.n_startup_trials,
                constant_liar=self.constant_liar,
                multivariate=self.multivariate,
                group=self.group,
            )


SECTIONS: dict[str, type[Frozen]] = {
    "budget": Budget,
    "resources": Resources,
    "scheduler": Scheduler,
    "searcher": Searcher,
}
