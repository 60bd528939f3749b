"""benchmarks/robustness.py's command line: evaluate options as `--inference` settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def robustness():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling _report
    try:
        spec = importlib.util.spec_from_file_location("bench_robustness", BENCH / "robustness.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


OPTIONS = {"--data", "--ood", "--max-images", "--out", "--name", "--inference", "-h", "--help"}


def test_a_setting_that_looks_like_an_option_is_taken(robustness) -> None:
    """`--inference "--tta"` (one word starting with --) used to stop argparse with 'expected at
    least one argument'; settings run up to the script's next own option."""
    argv = ["m1", "--inference", "--tta", "", "--scale auto", "--data", "d", "--name", "x"]
    rest, settings = robustness.split_inference(argv, OPTIONS)
    assert settings == ["--tta", "", "--scale auto"]
    assert rest == ["m1", "--data", "d", "--name", "x"]
    assert robustness.split_inference(["m1", "--data", "d"], OPTIONS) == (
        ["m1", "--data", "d"],
        None,
    )


def test_inference_without_a_setting_is_refused(robustness) -> None:
    with pytest.raises(SystemExit, match="at least one setting"):
        robustness.split_inference(["m1", "--inference", "--data", "d"], OPTIONS)
