"""The bad-input matrix (issue 18): every mistake a user can make in the data, the split, the
search space or a model folder ends `run`, `train`, `evaluate`, `predict` or `export` with exit
code 2 and one error naming the file or field and what is wrong (a data set's problems listed
under it), with no traceback, before Ray starts and before anything is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from helpers import make_folder
from PIL import Image

import emseg_search.train.cluster as cluster
from emseg_search.cli.main import main

SPEC = {
    "name": "tiny",
    "budget": {"num_samples": 1},
    "scheduler": {"type": "none", "max_epochs": 1},
    "fixed": {"tile_size": 64, "batch_size": 2},
    "parameters": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}

Breaker = Callable[[Path], list[str]]  # breaks the data folder or space; returns extra args


def _remove(rel: str) -> Breaker:
    def go(d: Path) -> list[str]:
        (d / rel).unlink()
        return []

    return go


def _write(rel: str, data: bytes) -> Breaker:
    def go(d: Path) -> list[str]:
        (d / rel).write_bytes(data)
        return []

    return go


def _truncate(rel: str) -> Breaker:
    def go(d: Path) -> list[str]:
        whole = (d / rel).read_bytes()
        (d / rel).write_bytes(whole[: len(whole) // 2])
        return []

    return go


def _tiff_image(broken: str) -> Breaker:
    """img01 as a TIFF instead of a PNG, then zero-byte or truncated."""

    def go(d: Path) -> list[str]:
        png = d / "images" / "img01.png"
        tif = png.with_suffix(".tif")
        tifffile.imwrite(tif, np.asarray(Image.open(png)))
        png.unlink()
        whole = tif.read_bytes()
        tif.write_bytes(b"" if broken == "empty" else whole[: len(whole) // 2])
        return []

    return go


def _mask(arr: np.ndarray) -> Breaker:
    def go(d: Path) -> list[str]:
        Image.fromarray(arr).save(d / "segmaps" / "img01.png")
        return []

    return go


def _empty(d: Path) -> list[str]:
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    return []


def _val_file(d: Path) -> list[str]:
    (d / "val.csv").write_text("img00\nimg99\n")  # the data folder's own split file
    return []


def _group_column(d: Path) -> list[str]:
    (d / "metadata.csv").write_text(
        "filename,paper\n" + "".join(f"img{i:02d}.png,p\n" for i in range(6))
    )
    return ["--group-by", "metadata.csv:doi"]


DATA_CASES: dict[str, tuple[Breaker, str]] = {
    "missing mask": (_remove("segmaps/img01.png"), "img01"),
    "mask without image": (_remove("images/img02.png"), "img02"),
    "zero-byte png": (_write("images/img01.png", b""), "img01.png"),
    "truncated png": (_truncate("images/img01.png"), "img01.png"),
    "zero-byte tiff": (_tiff_image("empty"), "img01.tif"),
    "truncated tiff": (_tiff_image("truncated"), "img01.tif"),
    "size mismatch": (_mask(np.zeros((32, 32), np.uint16)), "img01.png"),
    "mask of bad values": (
        _mask(np.tile(np.array([0, 128, 255, 7], np.uint8), (64, 16))),
        "img01.png",
    ),
    "empty folder": (_empty, "missing images/"),
    "split naming absent images": (_val_file, "img99"),
    "group column missing": (_group_column, "has no column 'doi'"),
}

SPACE_CASES: dict[str, tuple[str, str]] = {
    "malformed yaml": ("name: tiny\nparameters: [unclosed\n", "space.yaml"),
    "unknown key": (yaml.safe_dump({**SPEC, "sheduler": {}}), "sheduler"),
    "low > high": (
        yaml.safe_dump({**SPEC, "parameters": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}}),
        "low",
    ),
    "log with low <= 0": (
        yaml.safe_dump(
            {**SPEC, "parameters": {"lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}}
        ),
        "log",
    ),
    "unknown arch": (
        yaml.safe_dump({**SPEC, "fixed": {**SPEC["fixed"], "arch": "unett"}}),
        "unett",
    ),
    "unknown encoder": (
        yaml.safe_dump({**SPEC, "fixed": {**SPEC["fixed"], "encoder": "resnet19"}}),
        "resnet19",
    ),
    "unknown loss": (
        yaml.safe_dump({**SPEC, "fixed": {**SPEC["fixed"], "loss": "diice"}}),
        "diice",
    ),
    "unknown augmentation": (
        yaml.safe_dump({**SPEC, "fixed": {**SPEC["fixed"], "augment": "strong"}}),
        "strong",
    ),
    "condition on an absent parameter": (
        yaml.safe_dump(
            {
                **SPEC,
                "parameters": {
                    **SPEC["parameters"],
                    "momentum": {
                        "type": "float",
                        "low": 0.8,
                        "high": 0.99,
                        "when": {"optimiser": ["sgd"]},
                    },
                },
            }
        ),
        "optimiser",
    ),
}


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid EMPS-layout folder of 6 images; Ray must not start."""

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    return make_folder(tmp_path / "data", n=6, size=(64, 64))


def _one_error_line(capsys: pytest.CaptureFixture[str], *names: str) -> str:
    """The error on stderr: one message (a data set's problems are listed under it, one per
    line), naming each of ``names``, with no traceback."""
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert lines and lines[0].startswith("error: "), err
    assert all(line.startswith("  - ") for line in lines[1:]), err
    assert "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def _space(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(SPEC))
    return path


@pytest.mark.parametrize("case", sorted(DATA_CASES))
@pytest.mark.parametrize("command", ["run", "train"])
def test_bad_data_is_one_line_before_anything_starts(
    case: str, command: str, fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker, name = DATA_CASES[case]
    extra = breaker(fresh)
    out = tmp_path / "results"
    if command == "run":
        args = ["run", str(_space(tmp_path)), "--data", str(fresh), "--results", str(out)]
    else:
        args = ["train", "--data", str(fresh), "--tile-size", "64", "--results", str(out)]
    assert main([*args, *extra]) == 2
    _one_error_line(capsys, name)
    assert not out.exists()


def test_a_data_path_that_does_not_exist(fresh: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    missing = tmp_path / "nowhere"
    assert main(["run", str(_space(tmp_path)), "--data", str(missing), "--results", str(out)]) == 2
    _one_error_line(capsys, "nowhere")
    assert main(["train", "--data", str(missing), "--results", str(out)]) == 2
    _one_error_line(capsys, "nowhere")
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_spaces_are_one_line_naming_the_file_and_field(
    case: str, fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, name = SPACE_CASES[case]
    space = _space(tmp_path, text)
    out = tmp_path / "results"
    assert main(["run", str(space), "--data", str(fresh), "--results", str(out)]) == 2
    _one_error_line(capsys, str(space), name)
    assert not out.exists()


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_folder_that_is_not_a_model(
    command: str, fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "weights.pt").write_text("hello")
    out = tmp_path / "out"
    args = {
        "evaluate": ["--data", str(fresh), "--out", str(out / "e.parquet")],
        "predict": [str(fresh / "images"), "--out", str(out)],
        "export": ["--format", "torchscript", "--out", str(out)],
    }[command]
    assert main([command, str(not_model), *args]) == 2
    _one_error_line(capsys, "not-a-model", "not a model artifact")
    assert not out.exists()
    assert json.dumps(sorted(p.name for p in not_model.iterdir())) == '["weights.pt"]'


@pytest.mark.parametrize("command", ["run", "train"])
def test_init_from_a_folder_that_is_not_a_fitting_model(
    command: str, fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import write_tiny_artifact

    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    other = write_tiny_artifact(tmp_path / "fpn-model", arch="fpn")
    out = tmp_path / "results"
    for start, says in ((not_model, "not a model artifact"), (other, "do not fit")):
        if command == "run":
            spec = {**SPEC, "fixed": {**SPEC["fixed"], "init_from": str(start)}}
            args = ["run", str(_space(tmp_path, yaml.safe_dump(spec))), "--data", str(fresh)]
        else:
            args = ["train", "--data", str(fresh), "--tile-size", "64", "--init-from", str(start)]
        assert main([*args, "--results", str(out)]) == 2
        _one_error_line(capsys, "init_from", start.name, says)
        assert not out.exists()
