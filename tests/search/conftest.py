"""Fixtures of the search tests: a SearchContext over a tiny synthetic data set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from emseg_search.search.storage import Storage
from emseg_search.search.trainable import SearchContext
from emseg_search.space.spec import SearchSpace


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 synthetic 64x64 images (EMPS layout, with a test.csv)."""
    from emseg_search.data.synth.default_set import ensure_synthetic_data

    return ensure_synthetic_data(tmp_path_factory.mktemp("data") / "synth", n=6, size=64)


@pytest.fixture
def make_context(tiny_data: Path) -> Callable[..., SearchContext]:
    """``make_context(space, exp_dir)``: what run_search would pass its trials and recorder."""
    import numpy as np

    from emseg_search.train.data import prepare_data

    def make(space: SearchSpace, exp_dir: Path) -> SearchContext:
        probe = space.trial_config(space.random_params(np.random.default_rng(0)), str(tiny_data))
        prepared, _, fingerprint = prepare_data(probe)
        return SearchContext(
            space=space,
            storage=Storage.open(exp_dir),
            data=str(tiny_data),
            use_gpu=False,
            threads=1,
            prepared=prepared,
            fingerprint=fingerprint,
        )

    return make
