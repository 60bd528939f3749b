"""cli.common.command: the offline environment, bad input as one line and exit code 2, other
failures left alone; every command uses it, and `--help` imports neither torch nor Ray."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emseg_search.cli.common import OFFLINE_DEFAULTS, UsageError, command, is_bad_input
from emseg_search.cli.main import COMMANDS


def run(exc: BaseException) -> int:
    @command
    def main(argv: list[str] | None = None) -> int:
        raise exc

    return main([])


def bad_inputs() -> list[BaseException]:
    from emseg_search.config import ConfigError
    from emseg_search.data.errors import DataError, Problem
    from emseg_search.inference.artifact import ArtifactError
    from emseg_search.inference.export.errors import ExportSetupError
    from emseg_search.models.pretrained import WeightsUnavailableError
    from emseg_search.search.driver import ResumeError
    from emseg_search.search.storage import StorageError
    from emseg_search.space.errors import SpaceError
    from emseg_search.train.cluster import ClusterError

    return [
        ConfigError("lr: must be > 0"),
        DataError("/d", [Problem("/d/images/a.png", "not an image")]),
        SpaceError("space.yaml: budget.num_samples: missing"),
        ArtifactError("/m: no artifact.json"),
        ExportSetupError("--format tflite: valid: onnx, torchscript"),
        WeightsUnavailableError("encoder_weights='imagenet' needs the hub"),
        StorageError("--storage x://y: cannot open it"),
        ResumeError("--resume: the search space differs"),
        ClusterError("no GPUs"),
        UsageError("--out x is not empty"),
    ]


@pytest.mark.parametrize("exc", bad_inputs(), ids=lambda e: type(e).__name__)
def test_bad_input_is_one_line_and_exit_2(
    exc: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(exc) == 2
    err = capsys.readouterr().err
    assert err == f"error: {exc}\n" and "Traceback" not in err


def test_our_value_errors_are_bad_input_but_a_librarys_are_not() -> None:
    from emseg_search.models.pretrained import offline_entry

    with pytest.raises(ValueError) as ours:
        offline_entry("no-such-encoder")
    assert is_bad_input(ours.value)
    with pytest.raises(ValueError) as theirs:
        json.loads("{not json")  # raised inside the json module: a crash, not bad input
    assert not is_bad_input(theirs.value)
    assert not is_bad_input(RuntimeError("boom"))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("k")])
def test_other_failures_propagate(exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        run(exc)


def test_offline_defaults_are_set_but_not_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in OFFLINE_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice stands
    seen = {}

    @command
    def main(argv: list[str] | None = None) -> int:
        seen.update({k: os.environ.get(k) for k in OFFLINE_DEFAULTS})
        return 0

    assert main([]) == 0
    assert seen == {"HF_HUB_OFFLINE": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_wrapped(name: str) -> None:
    main = importlib.import_module(COMMANDS[name][0]).main
    assert getattr(main, "__wrapped__", None) is not None, f"{name}: main lacks @command"


def test_the_console_script_entry_point_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    """pyproject's [project.scripts] `emseg-search` names a callable main that dispatches."""
    import importlib

    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"]
    module, _, attr = target["emseg-search"].partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert main(["--help"]) == 0 and "commands:" in capsys.readouterr().out
    assert main(["nosuch"]) == 2


@pytest.mark.parametrize("module", ["emseg_search.cli.main", "emseg_search.run"])
def test_help_imports_neither_torch_nor_ray(module: str) -> None:
    code = (
        f"import sys, runpy; sys.argv = ['x', '--help']\n"
        f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
