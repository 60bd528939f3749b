"""Search spaces: YAML -> a typed, validated SearchSpace -> Optuna define-by-run sampling."""

from __future__ import annotations

from emseg_search.space.errors import SpaceError
from emseg_search.space.spec import SearchSpace, load_space, space_from_dict

__all__ = ["SearchSpace", "SpaceError", "load_space", "space_from_dict"]
