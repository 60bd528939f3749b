"""Errors of a search space: one '<key.path>: <message>' line per problem, all found at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from emseg_search.space.params import KINDS


class SpaceError(ValueError):
    """A search space is invalid; the message starts with its file (or source) and key path."""


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
