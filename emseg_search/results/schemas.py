"""Every Parquet table's schema, declared in one place (never inferred from the first row).

results/<experiment>/trials.parquet   one row per trial          TRIAL_COLUMNS + params_<name>
results/<experiment>/epochs.parquet   one row per trial x epoch  EPOCH_SCHEMA
<evaluate out>/images.parquet         one row per scored image   IMAGE_SCHEMA
<predict/evaluate out>/particles.parquet  one row per particle   PARTICLE_SCHEMA
results/<experiment>/final/images.parquet  one row per architecture x seed x test image
                                           FINAL_IMAGE_SCHEMA (written by `final`)
results/<experiment>/final/particles.parquet  true and predicted particles of the test images
                                           FINAL_PARTICLE_SCHEMA
results/<experiment>/final.parquet   intervals and paired tests   FINAL_SCHEMA (analysis)
<evaluate --shifts out>.parquet       one row per image x shift   ROBUSTNESS_SCHEMA
results/<experiment>/final/robustness.parquet  final runs x shift x image   FINAL_ROBUSTNESS_SCHEMA
results/<experiment>/final/robustness_summary.parquet  per architecture x shift, with intervals
                                           FINAL_ROBUSTNESS_SUMMARY_SCHEMA
"""

from __future__ import annotations

import pyarrow as pa

F64 = pa.float64()

# Metrics of one epoch, as the Train worker reports them.
EPOCH_METRICS: dict[str, pa.DataType] = {
    "epoch": pa.int64(),
    "train_loss": pa.float64(),
    "lr": pa.float64(),
    "epoch_seconds": pa.float64(),
    "val_seconds": pa.float64(),
    "train_images_per_s": pa.float64(),
    "val_epoch": pa.int64(),
    "val_iou": pa.float64(),
    "val_dice": pa.float64(),
    "val_precision": pa.float64(),
    "val_recall": pa.float64(),
    "val_mean_image_iou": pa.float64(),
    "val_mean_image_dice": pa.float64(),
    # particles (the target's post-processing, as `evaluate`) matched to the true ones at
    # IoU >= 0.5; count error: summed per-image |predicted - true count| / true count
    "val_particle_precision": pa.float64(),
    "val_particle_recall": pa.float64(),
    "val_particle_f1": pa.float64(),
    "val_panoptic_quality": pa.float64(),
    "val_count_error": pa.float64(),
    # with TrialConfig.val_shifts: mean IoU of the validation images under those shifts, and
    # each shift's own IoU (shift name -> IoU; pandas reads it as [(name, IoU), ...]:
    # results.io.shift_ious spreads it into one column per shift)
    "val_robust_iou": pa.float64(),
    "val_shift_iou": pa.map_(pa.string(), pa.float64()),
    # the model's forward pass on the validation images (batch 1, original size, no
    # post-processing; the first image of each validation not timed): milliseconds per
    # megapixel on the trial's device, so it depends on the CPU/GPU and on what else ran
    "val_ms_per_megapixel": pa.float64(),
    # what picks the best epoch: val_iou, or with val_shifts the robust_weight mix
    "val_score": pa.float64(),
    "best_val_iou": pa.float64(),  # val_iou of the best epoch (by val_score)
    "best_val_score": pa.float64(),
    "best_epoch": pa.int64(),
}
EPOCH_SCHEMA = pa.schema([("trial_id", pa.string()), *EPOCH_METRICS.items()])
# the epoch metrics of one number each: what a search may rank on, what a model keeps
SCALAR_EPOCH_METRICS = tuple(
    m for m, t in EPOCH_METRICS.items() if pa.types.is_floating(t) or pa.types.is_integer(t)
)

TRIAL_STATUSES = ("running", "completed", "pruned", "stopped", "error")
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": pa.string(),
    "status": pa.string(),
    "best_val_iou": pa.float64(),
    "last_val_iou": pa.float64(),
    "best_val_dice": pa.float64(),
    # the best epoch is the one of highest val_score (= val_iou unless val_shifts are set)
    "best_val_score": pa.float64(),
    "best_val_robust_iou": pa.float64(),
    # particle scores of the best epoch and of the last one (absent in tables from before)
    "best_val_particle_f1": pa.float64(),
    "last_val_particle_f1": pa.float64(),
    "best_val_panoptic_quality": pa.float64(),
    "best_val_count_error": pa.float64(),
    "best_val_ms_per_megapixel": pa.float64(),
    "best_epoch": pa.int64(),
    "epochs_run": pa.int64(),
    "train_seconds": pa.float64(),
    "error": pa.string(),
    "model_dir": pa.string(),
    # a space with `objectives`: whether the trial is Pareto-optimal among the completed
    # trials over their best_<objective> columns (results/pareto.py); null without objectives
    "pareto": pa.bool_(),
}

# What a search may optimise: epoch metric -> the direction that is better. Each has a
# ``best_<metric>`` column in trials.parquet (its value at the trial's best epoch), which is
# what a multi-objective search's Pareto front is computed over.
OBJECTIVES: dict[str, str] = {
    "val_iou": "max",
    "val_dice": "max",
    "val_score": "max",
    "val_robust_iou": "max",
    "val_particle_f1": "max",
    "val_panoptic_quality": "max",
    "val_count_error": "min",
    "val_ms_per_megapixel": "min",
}


_ARROW = {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}


def trial_schema(param_names: tuple[str, ...] | list[str]) -> pa.Schema:
    """Schema of trials.parquet for a search space: fixed columns + ``params_<name>``."""
    from emseg_search.config import field_type

    params = [(f"params_{n}", _ARROW.get(field_type(n)[0], pa.string())) for n in param_names]
    return pa.schema([*TRIAL_COLUMNS.items(), *params])


IMAGE_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        # pixels, at the original resolution
        *[(f"{c}_px", pa.int64()) for c in ("tp", "fp", "fn", "tn")],
        ("iou", F64),
        ("dice", F64),
        ("precision", F64),
        ("recall", F64),
        # particles: 4-connected components of the predicted mask (watershed-split with
        # --split-touching) matched to the true instances at IoU >= 0.5 (StarDist-style)
        ("n_true", pa.int64()),
        ("n_pred", pa.int64()),
        ("particle_tp", pa.int64()),
        ("particle_precision", F64),
        ("particle_recall", F64),
        ("particle_f1", F64),
        ("mean_matched_iou", F64),
        ("panoptic_quality", F64),
        # 1-Wasserstein distance between true and predicted equivalent diameters
        ("size_wasserstein_px", F64),
        ("size_wasserstein_nm", F64),
        # (median predicted - median true equivalent diameter) / median true; NaN when a side
        # has no particle
        ("median_diameter_error", F64),
        ("seconds", F64),
        # the scale the image ran at (the model's, unless --scale chose another or auto)
        ("working_scale", F64),
    ]
)

# Lengths measured in px, each with an ``<name>_px`` and an ``<name>_nm`` column.
LENGTHS: tuple[str, ...] = (
    "equivalent_diameter",
    "major_axis",
    "minor_axis",
    "feret_max",
    "perimeter",
)
PARTICLE_COLUMNS: dict[str, pa.DataType] = {
    "image": pa.string(),
    "particle_id": pa.int64(),  # the particle's id in the label map
    "centroid_y": F64,
    "centroid_x": F64,
    "bbox_min_row": pa.int64(),
    "bbox_min_col": pa.int64(),
    "bbox_max_row": pa.int64(),  # exclusive, numpy-slice style
    "bbox_max_col": pa.int64(),  # exclusive
    "touches_border": pa.bool_(),
    "area_px": pa.int64(),
    **{f"{n}_px": F64 for n in LENGTHS},
    "circularity": F64,
    "solidity": F64,
    "eccentricity": F64,
    "mean_intensity": F64,  # in the image's own units; NaN without an image
    "pixel_size_nm": F64,  # NaN when unknown, and then so are all *_nm columns
    "area_nm2": F64,
    **{f"{n}_nm": F64 for n in LENGTHS},
}
PARTICLE_SCHEMA = pa.schema(list(PARTICLE_COLUMNS.items()))


# `final`: the best configuration of each architecture retrained (one run per seed) and scored
# on held-out test images; one row per architecture x seed x image, IMAGE_SCHEMA's columns plus
# which run it is and the image's group (its paper for EMPS; its own name when ungrouped).
FINAL_RUN_COLUMNS: dict[str, pa.DataType] = {
    "arch": pa.string(),
    "seed": pa.int64(),
    "trial_id": pa.string(),  # the search trial whose configuration was retrained
    "group": pa.string(),
}
FINAL_IMAGE_SCHEMA = pa.schema(
    [*FINAL_RUN_COLUMNS.items(), *((f.name, f.type) for f in IMAGE_SCHEMA)]
)
# kind "true": the ground-truth particles of the test images (arch, seed and trial_id null);
# kind "pred": each run's predicted particles.
FINAL_PARTICLE_SCHEMA = pa.schema(
    [("kind", pa.string()), *list(FINAL_RUN_COLUMNS.items())[:3], *PARTICLE_COLUMNS.items()]
)

# final.parquet: per architecture and metric an estimate with its bootstrap 95 % interval
# (kind "architecture"), and paired differences between architectures (kind "difference":
# arch minus arch_b) with a Wilcoxon signed-rank test and P(arch beats arch_b on a random image).
FINAL_KINDS = ("architecture", "difference")
FINAL_METRICS = ("iou", "dice", "particle_f1")
FINAL_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("arch", pa.string()),
        ("arch_b", pa.string()),  # difference rows only
        ("metric", pa.string()),
        ("estimate", F64),
        ("ci_low", F64),
        ("ci_high", F64),
        ("seed_std", F64),  # architecture rows: std over seeds of the metric
        ("n_images", pa.int64()),
        ("n_groups", pa.int64()),
        ("n_seeds", pa.int64()),
        ("wilcoxon_statistic", F64),  # difference rows only
        ("wilcoxon_p", F64),
        ("prob_superiority", F64),
        ("trial_id", pa.string()),  # architecture rows: the retrained search trial
        ("method", pa.string()),  # how the interval and the test were computed
    ]
)


# `evaluate --shifts` (inference/robustness.py): one row per image x shift, IMAGE_SCHEMA's
# columns scored on the shifted image; synthetic domains are shifts of kind "domain".
ROBUSTNESS_SCHEMA = pa.schema(
    [("shift", pa.string()), ("shift_kind", pa.string()), *((f.name, f.type) for f in IMAGE_SCHEMA)]
)
# `final --shifts`: each final run on a sample of the test images under the benchmark's shifts
# (and on the synthetic domains); ROBUSTNESS_SCHEMA's columns plus which run it is.
FINAL_ROBUSTNESS_SCHEMA = pa.schema(
    [*list(FINAL_RUN_COLUMNS.items())[:3], *((f.name, f.type) for f in ROBUSTNESS_SCHEMA)]
)
# final/robustness_summary.parquet (`final --shifts`, or `report` where it is missing): per
# architecture and shift, the scores pooled over images and seeds and, for each shift of the
# test images, its IoU change against ``none`` with a 95 % interval paired over the images
# (analysis.intervals.shift_change_intervals; null for ``none`` and the synthetic domains).
FINAL_ROBUSTNESS_SUMMARY_SCHEMA = pa.schema(
    [
        ("arch", pa.string()),
        ("seeds", pa.int64()),
        ("shift", pa.string()),
        ("kind", pa.string()),
        ("images", pa.int64()),
        ("iou", F64),
        ("dice", F64),
        ("particle_f1", F64),
        ("iou_change", F64),
        ("f1_change", F64),
        ("iou_change_ci_low", F64),
        ("iou_change_ci_high", F64),
        ("iou_change_median_image", F64),
    ]
)
