"""Final evaluation of a search: the best configuration of each architecture, retrained on the
search's training + validation images with several seeds, scored on held-out test images.

The best of N trials picked on the validation split is flattered by the selection; a test split
it never saw, and seeds, say how much of the difference between architectures is real
(analysis/final.py turns the per-image table into intervals and paired tests).

results/<experiment>/final/
  final.json                  settings, the retrained trials, each finished run
  runs/<arch>/seed<k>/        the Train run (config.yaml, epochs.parquet, model/) and its
                              test_images.parquet + test_particles.parquet
  images.parquet              FINAL_IMAGE_SCHEMA: every run's per-image scores
  particles.parquet           FINAL_PARTICLE_SCHEMA: true and predicted particles
  robustness.parquet          FINAL_ROBUSTNESS_SCHEMA (with ``shifts``): every run on the
                              robustness benchmark (runs/.../test_robustness.parquet each)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emseg_search.atomic import write_text
from emseg_search.config import INSTANCE_ARCHS, TrialConfig

FINAL_DIR = "final"
# What a resumed `final` must keep (the seeds may grow).
SETTINGS = (
    "test_data",
    "split",
    "split_names",
    "group_by",
    "architectures",
    "tta",
    "epochs",
)  # not `shifts` / `shift_images`: they only rescore the kept models


class FinalError(ValueError):
    """`final` cannot run as asked: the message names the experiment, file or option."""


@dataclass(frozen=True)
class Candidate:
    """The configuration of one architecture to retrain: its best search trial's."""

    arch: str
    trial_id: str
    best_val_iou: float
    config: TrialConfig


def best_per_architecture(exp_dir: Path, archs: Sequence[str] | None = None) -> list[Candidate]:
    """The best trial (by best_val_score: val_iou, or the robust mix with val_shifts) of each
    architecture the search tried, best first.

    The configuration is the one the trial trained with (its model artifact's config.yaml, read
    as written: ``load_artifact`` drops ``encoder_weights``, which a retraining needs), so
    nothing is re-derived from the space. ``archs`` keeps only those (FinalError names unknown
    ones).
    """
    from emseg_search.config import ConfigError
    from emseg_search.results.io import load_experiment, selection_score

    try:
        trials = load_experiment(exp_dir)["trials"]
    except FileNotFoundError as exc:
        raise FinalError(str(exc)) from None
    scored = trials.assign(_score=selection_score(trials))
    scored = scored[scored["_score"].notna() & scored["model_dir"].notna()]
    best: dict[str, Candidate] = {}
    for row in scored.sort_values("_score", ascending=False).itertuples():
        try:
            cfg = TrialConfig.from_yaml(Path(row.model_dir) / "config.yaml")
        except (ConfigError, OSError):
            continue  # a trial whose model is gone cannot say what it trained
        if cfg.arch not in best:
            best[cfg.arch] = Candidate(cfg.arch, row.trial_id, float(row.best_val_iou), cfg)
    if not best:
        raise FinalError(f"{exp_dir}: no trial with a validation score and a model to retrain")
    if archs:
        unknown = sorted(set(archs) - set(best))
        if unknown:
            raise FinalError(
                f"--archs: {', '.join(unknown)} not among the architectures this search "
                f"scored ({', '.join(sorted(best))})"
            )
        return [c for c in best.values() if c.arch in archs]
    return list(best.values())


def retrain_config(
    candidate: Candidate, seed: int, test_file: Path | None, epochs: int | None = None
) -> TrialConfig:
    """The candidate's configuration trained on train + validation (no split), seeded, with
    the test images (``test_file``, when they are in the training folder) held out;
    ``epochs`` replaces the search's training length (the schedule stretches with it)."""
    update: dict[str, Any] = {"seed": seed, "val_fraction": 0.0, "val_file": None}
    if epochs is not None:
        update["epochs"] = epochs
    if test_file is not None:
        update["test_file"] = str(test_file)
    return TrialConfig.from_dict({**candidate.config.to_dict(), **update}, source="final")


def select_test_images(
    test_data: Path, split: str | None, cfg: TrialConfig
) -> tuple[Any, list[str], str, Path | None]:
    """(EMData of ``test_data``, the test names, their description, the split file when the
    test images lie in the training folder and must be held out of it)."""
    from emseg_search.data import load_data, resolve_split
    from emseg_search.inference.evaluation import select

    data = load_data(test_data, progress=False)
    split = split or ("test" if "test" in data.index.splits else "all")
    names, described = select(data, split, cfg)
    same_folder = Path(cfg.data).absolute() == data.root.absolute()
    if not same_folder:
        return data, names, described, None
    if split == "all":
        raise FinalError(
            f"--test-data {test_data} is the folder the search trained on: pass --split FILE "
            "naming held-out test images (the search's --test-file)"
        )
    held = Path(split) if split != "test" else data.root / "test.csv"
    # the test images must be ones the search neither trained nor validated on
    searched = resolve_split(
        data.index, cfg.val_fraction, cfg.split_seed, cfg.val_file, cfg.group_by, cfg.test_file
    )
    seen = sorted(set(names) & set(searched.train + searched.val))
    if seen:
        raise FinalError(
            f"{held}: {len(seen)} of its {len(names)} images were in the search's training or "
            f"validation split ({', '.join(seen[:5])}): the comparison would not be held out. "
            "Run the search with --test-file naming them"
        )
    return data, names, described, held.absolute()


def image_groups(data: Any, names: list[str], group_by: str | None) -> dict[str, str]:
    """Each test image's group (its paper for EMPS): ``group_by`` on the test folder, or the
    image's own name when there is no grouping."""
    from emseg_search.data import read_groups

    if not group_by:
        return {n: n for n in names}
    return read_groups(data.root, names, group_by)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinalError(f"{path}: cannot read it ({exc}); pass --overwrite") from None


def _recorded_shifts(info_path: Path) -> tuple[list[str] | None, int | None]:
    """(shifts, shift_images) a previous `final` scored its runs under (Nones: none)."""
    recorded = _load_json(info_path)
    return recorded.get("shifts"), recorded.get("shift_images")


def check_settings(recorded: dict[str, Any], settings: dict[str, Any], where: Path) -> None:
    """FinalError naming each setting that differs from the ones ``where`` recorded."""
    changed = [k for k in SETTINGS if k in recorded and recorded[k] != settings[k]]
    if changed:
        raise FinalError(
            f"{where} was started with other settings ({', '.join(changed)}); run it with the "
            "same ones (only --seeds may grow), or pass --overwrite"
        )


def run_final(
    exp_dir: str | Path,
    test_data: str | Path,
    split: str | None = None,
    seeds: int = 3,
    archs: Sequence[str] | None = None,
    group_by: str | None = None,
    workers: int = 1,
    use_gpu: bool = False,
    address: str | None = None,
    tta: bool = False,
    epochs: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    shifts: str | Sequence[str] | None = None,
    shift_images: int = 24,
) -> Path:
    """Retrain each architecture's best configuration ``seeds`` times and score every run on
    the test images; returns final/images.parquet.

    Each finished run is kept (its model and scores); a rerun skips those and resumes an
    unfinished one from its last checkpoint. Everything is checked before any training.
    With ``shifts`` ('all' or data/shifts.py names), each run is also scored on the robustness
    benchmark: a seeded sample of ``shift_images`` test images under each shift, and each
    synthetic domain's images; final/robustness.parquet.
    """
    import shutil

    from emseg_search.inference.evaluation import evaluate_images
    from emseg_search.inference.predictor import Predictor
    from emseg_search.particles.measurement import concat_particles
    from emseg_search.results.io import read_table, write_table
    from emseg_search.results.schemas import (
        FINAL_IMAGE_SCHEMA,
        FINAL_PARTICLE_SCHEMA,
        FINAL_ROBUSTNESS_SCHEMA,
    )
    from emseg_search.train.driver import run_training

    exp_dir = Path(exp_dir).absolute()
    if seeds < 1:
        raise FinalError(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise FinalError(f"--epochs must be >= 1, got {epochs}")
    if shifts is not None:
        from emseg_search.data.shifts import resolve

        try:
            shifts = resolve(shifts)
        except ValueError as exc:
            raise FinalError(f"--shifts: {exc}") from None
        if shift_images < 1:
            raise FinalError(f"--shift-images must be >= 1, got {shift_images}")
    candidates = best_per_architecture(exp_dir, archs)
    first = candidates[0].config
    data, names, described, held = select_test_images(Path(test_data), split, first)
    if not names:
        raise FinalError(f"{test_data}: no test images in {described}")
    group_by = group_by or first.group_by
    groups = image_groups(data, names, group_by)
    final_dir = exp_dir / FINAL_DIR
    if overwrite:
        shutil.rmtree(final_dir, ignore_errors=True)
        (exp_dir / "final.parquet").unlink(missing_ok=True)
    recorded_shifts = _recorded_shifts(final_dir / "final.json")
    settings = {
        "test_data": str(data.root),
        "split": described,
        "split_names": len(names),
        "group_by": group_by,
        "tta": tta,
        "epochs": epochs,
        "shifts": list(shifts) if shifts else recorded_shifts[0],
        "shift_images": shift_images if shifts else recorded_shifts[1],
        "architectures": {
            c.arch: {
                "trial_id": c.trial_id,
                "best_val_iou": c.best_val_iou,
                "config": c.config.to_dict(),
            }
            for c in candidates
        },
    }
    info_path = final_dir / "final.json"
    recorded = _load_json(info_path)
    check_settings(recorded, settings, info_path)
    if shifts and recorded_shifts != (list(shifts), shift_images):
        # other shifts than the kept runs were scored under: score them again, models kept
        for old in final_dir.glob("runs/*/seed*/test_robustness.parquet"):
            old.unlink()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info = {
        **recorded,
        **settings,
        "seeds": max(seeds, recorded.get("seeds", 0)),
        "n_groups": len(set(groups.values())),
        "started_at": recorded.get("started_at", now),
        "finished_at": None,
        "runs": recorded.get("runs", {}),
    }
    final_dir.mkdir(parents=True, exist_ok=True)
    write_text(info_path, json.dumps(info, indent=2, default=str) + "\n")

    plan = [(c, s) for c in candidates for s in range(info["seeds"])]
    items = data.subset(names)
    log(
        f"final: {len(candidates)} architecture(s) x {info['seeds']} seed(s) = {len(plan)} "
        f"runs, each scored on {len(names)} test images ({described}; "
        f"{info['n_groups']} groups{f' by {group_by}' if group_by else ', one per image'})"
    )
    t_start = time.perf_counter()
    for k, (cand, seed) in enumerate(plan, 1):
        key = f"{cand.arch}/seed{seed}"
        flips = tta and cand.arch not in INSTANCE_ARCHS  # instances cannot be flip-averaged
        run_dir = final_dir / "runs" / cand.arch / f"seed{seed}"
        scored = run_dir / "test_images.parquet"
        if key in info["runs"] and scored.is_file():
            log(f"[{k}/{len(plan)}] {key}: done before, kept")
            if shifts and not (run_dir / "test_robustness.parquet").is_file():
                model = Predictor.from_dir(info["runs"][key]["model_dir"], tta=flips)
                _score_shifts(model, items, shifts, shift_images, cand, seed, run_dir, log)
            continue
        cfg = retrain_config(cand, seed, held, epochs)
        log(
            f"[{k}/{len(plan)}] {key}: training trial {cand.trial_id}'s configuration "
            f"({cfg.encoder}, {cfg.loss}, {cfg.augment}, {cfg.epochs} epochs) on all "
            f"search images"
        )
        t0 = time.perf_counter()
        outcome = run_training(cfg, run_dir, workers=workers, use_gpu=use_gpu, address=address)
        if outcome.model_dir is None:
            raise FinalError(
                f"{key}: training saved no model ({outcome.stop_reason}); see {run_dir}"
            )
        predictor = Predictor.from_dir(outcome.model_dir, tta=flips)
        done = evaluate_images(predictor, items, split_touching=True, progress=False)
        run_cols = {"arch": cand.arch, "seed": seed, "trial_id": cand.trial_id}
        rows = [{**run_cols, "group": groups[r["name"]], **r} for r in done.rows]
        write_table(rows, FINAL_IMAGE_SCHEMA, scored)
        particles = pd.concat(
            [
                concat_particles(done.pred_tables).assign(kind="pred", **run_cols),
                concat_particles(done.true_tables).assign(kind="true"),
            ],
            ignore_index=True,
        )
        write_table(
            particles.to_dict("records"), FINAL_PARTICLE_SCHEMA, run_dir / "test_particles.parquet"
        )
        if shifts:
            _score_shifts(predictor, items, shifts, shift_images, cand, seed, run_dir, log)
        seconds = time.perf_counter() - t0
        iou = _pixel_iou(rows)
        info["runs"][key] = {
            "seconds": seconds,
            "model_dir": str(outcome.model_dir),
            "test_iou": iou,
        }
        write_text(info_path, json.dumps(info, indent=2, default=str) + "\n")
        left = (time.perf_counter() - t_start) / k * (len(plan) - k)
        log(
            f"[{k}/{len(plan)}] {key}: test IoU {iou:.4f} on {len(rows)} images in "
            f"{seconds:.0f} s; ~{left / 60:.0f} min left"
        )

    frames = [
        read_table(final_dir / "runs" / c.arch / f"seed{s}" / "test_images.parquet").to_pandas()
        for c, s in plan
    ]
    images = pd.concat(frames, ignore_index=True)
    write_table(images.to_dict("records"), FINAL_IMAGE_SCHEMA, final_dir / "images.parquet")
    parts = []
    for i, (c, s) in enumerate(plan):
        table = read_table(
            final_dir / "runs" / c.arch / f"seed{s}" / "test_particles.parquet"
        ).to_pandas()
        parts.append(table if i == 0 else table[table["kind"] == "pred"])  # truth once
    particles = pd.concat(parts, ignore_index=True)
    write_table(
        particles.to_dict("records"), FINAL_PARTICLE_SCHEMA, final_dir / "particles.parquet"
    )
    if shifts:
        shifted = [
            read_table(final_dir / "runs" / c.arch / f"seed{s}" / "test_robustness.parquet")
            for c, s in plan
        ]
        rows = pd.concat([t.to_pandas() for t in shifted], ignore_index=True)
        write_table(
            rows.to_dict("records"), FINAL_ROBUSTNESS_SCHEMA, final_dir / "robustness.parquet"
        )
    info["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_text(info_path, json.dumps(info, indent=2, default=str) + "\n")
    return final_dir / "images.parquet"


def _score_shifts(
    predictor: Any,
    items: Sequence[Any],
    shifts: Sequence[str],
    n_images: int,
    cand: Candidate,
    seed: int,
    run_dir: Path,
    log: Callable[[str], None],
) -> None:
    """One final run on the robustness benchmark -> run_dir/test_robustness.parquet."""
    import random

    from emseg_search.inference.robustness import (
        evaluate_shifts,
        robustness_score,
        summarize_shifts,
    )
    from emseg_search.results.io import write_table
    from emseg_search.results.schemas import FINAL_ROBUSTNESS_SCHEMA

    sample = list(items)
    if n_images < len(sample):  # the same seeded sample for every run
        keep = set(random.Random(0).sample(sorted(m.name for m in sample), n_images))
        sample = [m for m in sample if m.name in keep]
    done = evaluate_shifts(predictor, sample, shifts, progress=False)
    run_cols = {"arch": cand.arch, "seed": seed, "trial_id": cand.trial_id}
    rows = [{**run_cols, **r} for r in done.rows]
    write_table(rows, FINAL_ROBUSTNESS_SCHEMA, run_dir / "test_robustness.parquet")
    score = robustness_score(summarize_shifts(done.rows))
    log(
        f"    robustness: IoU {score['robustness_iou']:.4f} over {score['shifts']} shifts "
        f"(unshifted {score['reference_iou']:.4f}, {len(sample)} images)"
    )


def _pixel_iou(rows: list[dict[str, Any]]) -> float:
    """IoU of the summed pixel counts of ``rows``."""
    tp = sum(r["tp_px"] for r in rows)
    union = tp + sum(r["fp_px"] + r["fn_px"] for r in rows)
    return tp / union if union else math.nan
