"""Load-time checks of a search space, run by SearchSpace's validator.

Each check returns '<key.path>: <message>' lines, so that one run of the validator reports
every problem in a YAML file at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from emseg_search.space_params import KINDS, CategoricalParam

if TYPE_CHECKING:
    from emseg_search.space import SearchSpace


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
