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


@pytest.fixture(scope="module")
def options(robustness) -> set[str]:
    """The script's own options, read from its parser."""
    return {o for a in robustness.build_parser()._actions for o in a.option_strings}


def test_a_setting_that_looks_like_an_option_is_taken(robustness, options) -> None:
    """`--inference "--tta"` (one word starting with --) used to stop argparse with 'expected at
    least one argument'; settings run up to the script's next own option."""
    argv = ["m1", "--inference", "--tta", "", "--scale auto", "--data", "d", "--name", "x"]
    rest, settings = robustness.split_inference(argv, options)
    assert settings == ["--tta", "", "--scale auto"]
    assert rest == ["m1", "--data", "d", "--name", "x"]
    assert robustness.split_inference(["m1", "--data", "d"], options) == (
        ["m1", "--data", "d"],
        None,
    )


def test_inference_without_a_setting_is_refused(robustness, options) -> None:
    with pytest.raises(SystemExit, match="at least one setting"):
        robustness.split_inference(["m1", "--inference", "--data", "d"], options)


def test_the_command_line_runs_each_setting_against_the_defaults(robustness) -> None:
    args = robustness.parse_args(
        ["m1", "m2", "--data", "d", "--inference", "", "--scale auto --tta", "--max-images", "8"]
    )
    assert [str(m) for m in args.models] == ["m1", "m2"]
    assert args.inference == ["", "--scale auto --tta"]
    assert args.max_images == 8
    assert robustness.parse_args(["m1", "--data", "d"]).inference == [""]  # the model as trained
