"""Fake experiments written with the project's own writers and schemas, and a dashboard served
on a free loopback port (a werkzeug server in a thread)."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emseg_search.results.io import write_table
from emseg_search.results.schemas import EPOCH_SCHEMA, trial_schema

PARAMS = ["arch", "encoder", "loss", "augment", "lr", "weight_decay", "scale"]
ARCHS = ("unet", "deeplabv3plus")
ENCODERS = ("mobilenet_v2", "timm-tf_efficientnet_lite0")
LOSSES = ("dice+bce", "focal+dice", "lovasz+bce")
AUGMENTS = ("flips", "light", "em")


def fake_rows(
    n_trials: int, n_epochs: int, seed: int = 0, start: int = 0, robust: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trial rows, epoch rows) of a plausible search: UNet/DeepLabV3+ trials whose IoU rises
    with the epochs; a DeepLab-only ``scale``; some pruned, one error; with ``robust``, robust
    IoU and particle scores too."""
    rng = np.random.default_rng(seed)
    trials, epochs = [], []
    for k in range(start, start + n_trials):
        tid = f"t{k:05d}"
        arch = ARCHS[k % 2]
        lr = float(10 ** rng.uniform(-3.5, -2.5))
        ceiling = 0.6 + 0.25 * rng.random() + (0.05 if arch == "unet" else 0.0)
        status = "completed" if k % 5 else "pruned"
        run = n_epochs if status == "completed" else max(1, n_epochs // 4)
        if k == 3:
            status, run = "error", 1
        ious = [ceiling * (1 - np.exp(-(e + 1) / 3)) + rng.normal(0, 0.005) for e in range(run)]
        robust_ious = [v - 0.1 * rng.random() for v in ious]
        f1s = [min(1.0, v * (0.6 + 0.5 * rng.random())) for v in ious]
        best = int(np.argmax(ious))
        for e in range(run):
            epochs.append(
                {
                    "trial_id": tid,
                    "epoch": e,
                    "train_loss": 1.0 / (e + 1.5),
                    "lr": lr * (0.9**e),
                    "epoch_seconds": 4.0 + rng.random(),
                    "val_seconds": 1.0,
                    "train_images_per_s": 26.0,
                    "val_epoch": e,
                    "val_iou": ious[e],
                    "val_dice": 2 * ious[e] / (1 + ious[e]),
                    "val_robust_iou": robust_ious[e] if robust else None,
                    "val_shift_iou": (
                        {"scale_x2": robust_ious[e] + 0.02, "invert": robust_ious[e] - 0.02}
                        if robust
                        else None
                    ),
                    "val_particle_f1": f1s[e] if robust else None,
                    "val_count_error": 1 - f1s[e] if robust else None,
                    "val_score": ious[e],
                    "best_val_iou": max(ious[: e + 1]),
                    "best_val_score": max(ious[: e + 1]),
                    "best_epoch": int(np.argmax(ious[: e + 1])),
                }
            )
        trials.append(
            {
                "trial_id": tid,
                "status": status,
                "best_val_iou": ious[best],
                "last_val_iou": ious[-1],
                "best_val_dice": 2 * ious[best] / (1 + ious[best]),
                "best_val_score": ious[best],
                "best_val_robust_iou": robust_ious[best] if robust else None,
                "best_val_particle_f1": f1s[best] if robust else None,
                "last_val_particle_f1": f1s[-1] if robust else None,
                "best_val_count_error": 1 - f1s[best] if robust else None,
                "best_val_ms_per_megapixel": (
                    20.0 + 25.0 * ((k // 2) % 2) + 10.0 * (arch == "unet") + 5 * rng.random()
                    if robust
                    else None
                ),
                "best_epoch": best,
                "epochs_run": run,
                "train_seconds": 4.5 * run,
                "error": "RuntimeError: CUDA out of memory (fake)" if status == "error" else None,
                "model_dir": None,
                "params_arch": arch,
                "params_encoder": ENCODERS[(k // 2) % 2],
                "params_loss": LOSSES[k % 3],
                "params_augment": AUGMENTS[(k // 3) % 3],
                "params_lr": lr,
                "params_weight_decay": float(10 ** rng.uniform(-6, -3)),
                "params_scale": (0.5, 1.0)[k % 4 // 2] if arch == "deeplabv3plus" else None,
            }
        )
    return trials, epochs


def write_experiment(
    root: Path,
    name: str,
    n_trials: int = 12,
    n_epochs: int = 6,
    seed: int = 0,
    robust: bool = False,
    finished: bool = True,
    objectives: dict[str, str] | None = None,
) -> Path:
    """results/<name>/ with trials.parquet, epochs.parquet and experiment.json; with
    ``objectives`` (needs ``robust``), a multi-objective search with its `pareto` column."""
    from emseg_search.results.pareto import pareto_flags

    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    trials, epochs = fake_rows(n_trials, n_epochs, seed, robust=robust)
    for row, flag in zip(trials, pareto_flags(trials, objectives or {}), strict=True):
        row["pareto"] = flag
    write_table(trials, trial_schema(PARAMS), path / "trials.parquet")
    write_table(epochs, EPOCH_SCHEMA, path / "epochs.parquet")
    info = {
        "name": name,
        "space": {
            "name": name,
            "description": f"fake search {name}",
            "budget": {"num_samples": n_trials},
            "objectives": objectives,
            "fixed": {"tile_size": 128},
            "parameters": {
                "lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
                "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
            },
        },
        "data": "synthetic",
        "started_at": "2026-12-01T10:00:00+00:00",
        **({"finished_at": "2026-12-01T11:30:00+00:00"} if finished else {}),
    }
    (path / "experiment.json").write_text(json.dumps(info), encoding="utf-8")
    return path


# shift -> (kind, IoU lost on every image)
SHIFTS = {
    "none": ("reference", 0.0),
    "scale_x0.5": ("scale", 0.05),
    "scale_x2": ("scale", 0.01),
    "invert": ("polarity", 0.0),
}


def write_final_shifts(path: Path, summarise: bool = True) -> None:
    """path/final/robustness.parquet as `final --shifts` writes it (unet and deeplabv3plus, two
    seeds, 8 test images, SHIFTS and a synthetic domain) and, with
    ``summarise``, its summary (analysis.intervals.robustness_summary_table)."""
    from emseg_search.analysis.intervals import robustness_summary_table
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SCHEMA

    rng = np.random.default_rng(5)
    rows = []
    for arch, base in (("unet", 0.92), ("deeplabv3plus", 0.90)):
        for seed in (0, 1):
            shifts = [(n, kind, drop, 8) for n, (kind, drop) in SHIFTS.items()]
            for shift, kind, drop, n in (*shifts, ("synth:sem", "domain", 0.2, 4)):
                for i in range(n):
                    iou = float(np.clip(base - drop + rng.normal(0, 0.01), 0.05, 0.99))
                    tp = round(iou * 2000)
                    row = dict.fromkeys(FINAL_ROBUSTNESS_SCHEMA.names)
                    row.update(
                        arch=arch, seed=seed, trial_id=f"t-{arch}", shift=shift,
                        shift_kind=kind, name=f"{'s' if kind == 'domain' else 'im'}{i}",
                        tp_px=tp, fp_px=2000 - tp, fn_px=0, tn_px=20_000, iou=tp / 2000,
                        n_true=10, n_pred=10, particle_tp=8,
                    )  # fmt: skip
                    rows.append(row)
    (path / "final").mkdir(parents=True, exist_ok=True)
    write_table(rows, FINAL_ROBUSTNESS_SCHEMA, path / "final" / "robustness.parquet")
    if summarise:
        robustness_summary_table(path / "final")


def write_run(root: Path, name: str, n_epochs: int = 5, epochs: int = 5) -> Path:
    """results/<name>/ as `train` writes it: config.yaml and epochs.parquet (trial_id empty),
    a model folder; ``epochs`` is what the config asked for."""
    path = root / name
    (path / "model").mkdir(parents=True, exist_ok=True)
    (path / "ray" / "checkpoint_2026-12-01_10-00-00.000000").mkdir(parents=True, exist_ok=True)
    _, rows = fake_rows(1, n_epochs, seed=7, start=2)
    write_table([{**r, "trial_id": ""} for r in rows], EPOCH_SCHEMA, path / "epochs.parquet")
    config = f"arch: unet\nencoder: mobilenet_v2\nloss: dice+bce\naugment: em\nepochs: {epochs}\n"
    (path / "config.yaml").write_text(config + "lr: 0.001\n", encoding="utf-8")
    (path / "model" / "config.yaml").write_text(config, encoding="utf-8")
    return path


def append_trial(path: Path, trial_id_number: int, n_epochs: int = 6) -> str:
    """Add one trial (and its epochs) to an experiment's tables, as the search does: the
    whole table rewritten atomically. Returns the new trial id."""
    from emseg_search.results.io import read_table

    trials = read_table(path / "trials.parquet").to_pylist()
    epochs = read_table(path / "epochs.parquet").to_pylist()
    new_t, new_e = fake_rows(1, n_epochs, seed=99, start=trial_id_number)
    write_table(epochs + new_e, EPOCH_SCHEMA, path / "epochs.parquet")
    write_table(trials + new_t, trial_schema(PARAMS), path / "trials.parquet")
    return new_t[0]["trial_id"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A dashboard served in a thread on 127.0.0.1; ``url`` is its address."""

    def __init__(self, root: Path, poll_ms: int = 400) -> None:
        from werkzeug.serving import make_server

        from emseg_search.dashboard.app import build_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
        self.app = build_app(root, poll_ms=poll_ms)
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, self.app.server, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="session")
def fake() -> types.ModuleType:
    """This module: write_experiment, append_trial, fake_rows, Served (conftest files cannot be
    imported by name: tests/conftest.py shadows them)."""
    return sys.modules[__name__]


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with two small experiments (one with robustness scores and `final
    --shifts`' tables), a big one
    (1,000 trials x 20 epochs), a half-written one, one with a corrupt table and a `train`
    run."""
    root = tmp_path_factory.mktemp("results")
    write_experiment(root, "small", n_trials=12, n_epochs=6)
    write_final_shifts(
        write_experiment(root, "robust", n_trials=10, n_epochs=5, seed=1, robust=True)
    )
    write_experiment(root, "big", n_trials=1000, n_epochs=20, seed=2)
    write_run(root, "run1")
    half = root / "half"
    half.mkdir()
    (half / "experiment.json").write_text(json.dumps({"name": "half"}), encoding="utf-8")
    write_experiment(root, "corrupt", n_trials=3, n_epochs=2)
    data = (root / "corrupt" / "trials.parquet").read_bytes()
    (root / "corrupt" / "trials.parquet").write_bytes(data[: len(data) // 2])
    (root / "secret.txt").write_text("not for the browser", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def served(results_root: Path) -> Iterator[Served]:
    s = Served(results_root)
    yield s
    s.close()
