"""Export to TorchScript and ONNX: same masks as the artifact at two sizes, export.json, CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_artifact

from emseg_search.cli.export import main
from emseg_search.inference.artifact import load_artifact
from emseg_search.inference.export import formats as export
from emseg_search.inference.export import verify as export_check
from emseg_search.inference.export.errors import ExportSetupError
from emseg_search.inference.export.formats import ExportResult, export_model
from emseg_search.inference.export.verify import compare, load_runner
from emseg_search.models.registry import required_stride

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("unet", "deeplabv3plus")
HAS_ONNX = all(importlib.util.find_spec(m) for m in export.ONNX_PACKAGES)
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="the `export` extra is not installed")
FORMATS = ("torchscript", pytest.param("onnx", marks=needs_onnx))


def tiny_artifact(out: Path, arch: str) -> Path:
    """A random-init resnet18 artifact (no weights downloaded) with non-default scale/threshold."""
    return write_tiny_artifact(
        out,
        mean=0.45,
        std=0.22,
        metrics={"val_iou": 0.75, "best_epoch": 3},
        arch=arch,
        encoder="resnet18",
        threshold=0.4,
        scale=0.5,
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return {arch: tiny_artifact(root / arch, arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def exported(artifacts: dict[str, Path]) -> Callable[[str, str], ExportResult]:
    """Export each (arch, format) once, to the default place inside the artifact."""
    cache: dict[tuple[str, str], ExportResult] = {}

    def get(arch: str, fmt: str) -> ExportResult:
        if (arch, fmt) not in cache:
            cache[arch, fmt] = export_model(artifacts[arch], fmt)
        return cache[arch, fmt]

    return get


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_gives_the_artifacts_masks_at_two_sizes(
    artifacts: dict[str, Path], exported: Callable[[str, str], ExportResult], arch: str, fmt: str
) -> None:
    result = exported(arch, fmt)
    assert result.model_path == artifacts[arch] / fmt / export.MODEL_FILES[fmt]
    assert result.ok and len(result.checks) == 2
    assert result.checks[0].shape[2:] != result.checks[1].shape[2:]
    assert result.max_abs_diff < 1e-3
    # independently of export_check.compare: other sizes, random inputs, batch 2
    art = load_artifact(artifacts[arch])  # extra folders do not spoil the artifact
    run = load_runner(result.model_path, fmt)
    s, cut = required_stride(art.config), math.log(0.4 / 0.6)
    rng = np.random.default_rng(0)
    for h, w in ((3 * s, 5 * s), (5 * s, 2 * s)):
        x = rng.normal(size=(2, 1, h, w)).astype(np.float32)
        with torch.inference_mode():
            eager = art.model(torch.from_numpy(x)).numpy()
        got = run(x)
        assert got.shape == eager.shape
        assert np.abs(got - eager).max() < 1e-3
        np.testing.assert_array_equal(got > cut, eager > cut)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_json_says_how_to_preprocess(
    artifacts: dict[str, Path], exported: Callable[[str, str], ExportResult], fmt: str
) -> None:
    result = exported("deeplabv3plus", fmt)
    assert result.info_path == result.model_path.parent / "export.json"
    info = json.loads(result.info_path.read_text())
    meta = json.loads((artifacts["deeplabv3plus"] / "artifact.json").read_text())
    assert (info["mean"], info["std"], info["threshold"]) == (0.45, 0.22, 0.4)
    assert (info["stride"], info["scale"]) == (meta["stride"], 0.5) == (16, 0.5)
    assert info["logit_threshold"] == pytest.approx(math.log(0.4 / 0.6))
    assert info["model_file"] == result.model_path.name and info["model_format"] == fmt
    assert info["input"]["shape"] == ["N", 1, "H", "W"] and info["input"]["dtype"] == "float32"
    assert (info["arch"], info["encoder"]) == ("deeplabv3plus", "resnet18")
    assert info["metrics"] == {"val_iou": 0.75, "best_epoch": 3}
    assert any("/ 255" in step for step in info["preprocessing"])
    assert any("99.9" in step for step in info["preprocessing"])
    assert info["verification"]["ok"] is True
    # what the model was trained with travels with it, down to the CPU kernels (reproducibility)
    trained = info["trained_with"]
    assert torch.__version__.startswith(trained["torch"])
    assert trained["cpu"].endswith(torch.backends.cpu.get_cpu_capability())
    assert {"albumentations", "opencv-python-headless", "python"} <= set(trained)


def test_output_path() -> None:
    here = Path("art")
    assert export.output_path(None, here, "onnx") == here / "onnx" / "model.onnx"
    assert export.output_path("x/seg.pt", here, "torchscript") == Path("x/seg.pt")
    assert export.output_path("x/dir", here, "torchscript") == Path("x/dir/model.pt")


def test_compare_known_answers() -> None:
    eager = np.array([[[[-2.0, -1.0, 5e-4, 3.0]]]], np.float32)  # threshold 0.5: cut 0
    same = compare(eager, eager + 1e-6, 0.5)
    assert same.ok and same.mask_mismatch == 0 and same.agreement == 1.0
    tie = compare(eager, np.array([[[[-2.0, -1.0, -5e-4, 3.0]]]], np.float32), 0.5)
    assert tie.ok and tie.mask_mismatch == 1 and tie.mask_mismatch_off_tie == 0  # a near-tie
    flip = compare(eager, -eager, 0.5)
    assert not flip.ok and (flip.mask_mismatch, flip.mask_mismatch_off_tie) == (4, 3)
    assert flip.max_abs_diff == pytest.approx(6.0)
    assert not compare(eager, np.full_like(eager, np.nan), 0.5).ok


def test_masks_that_differ_fail_the_export(
    artifacts: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = load_artifact(artifacts["unet"]).model
    monkeypatch.setattr(export, "_run_exporter", lambda fmt, art, x, path: path.touch() or [])
    wrong = lambda x: -model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    monkeypatch.setattr(export_check, "load_runner", lambda path, fmt: wrong)
    out = tmp_path / "bad.pt"
    assert main([str(artifacts["unet"]), "--format", "torchscript", "--out", str(out)]) == 1
    assert f"masks differ; do not use {out}" in capsys.readouterr().err
    assert json.loads((tmp_path / "export.json").read_text())["verification"]["ok"] is False


def test_not_an_artifact_exits_2_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"")
    assert main([str(folder), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "artifact.json" in err and "Traceback" not in err


def test_unknown_format_is_refused(artifacts: dict[str, Path]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(artifacts["unet"]), "--format", "tflite"])
    assert exc.value.code == 2
    with pytest.raises(ExportSetupError, match="valid: onnx, torchscript"):
        export_model(artifacts["unet"], "tflite")


def test_bad_check_size_is_refused(
    artifacts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(artifacts["unet"]), "--format", "torchscript", "--check-size", "64x80"]) == 2
    assert "multiples of 32" in capsys.readouterr().err


def test_onnx_without_the_extra_says_what_to_install(
    artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    assert main([str(artifacts["unet"]), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'emseg-search[export]'" in err and "onnxruntime" in err
    assert "Traceback" not in err


def test_cli_end_to_end(artifacts: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "ts" / "seg.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "emseg_search", "export", str(artifacts["unet"])]
        + ["--format", "torchscript", "--out", str(out), "--check-size", "96x64"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "96x64 (N=1)" in proc.stdout
    assert "OK: same masks" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
    assert out.is_file() and (out.parent / "export.json").is_file()
