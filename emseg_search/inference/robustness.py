"""The robustness benchmark: a model scored on labelled images under controlled shifts.

The shifts and synthetic domains themselves live in the data layer (data/shifts.py), where
training can score its validation images under them too; each shift turns one labelled
micrograph into another with fixed parameters and seed, so every model sees the same images.
One row per image x shift (``results.schemas.ROBUSTNESS_SCHEMA``); per shift the pooled pixel
IoU and particle F1; the robustness score is the mean over every shift and domain except the
reference ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg_search.data.shifts import DOMAINS, SHIFTS, domain_items, shifted_items


@dataclass
class ShiftEvaluation:
    """What ``evaluate_shifts`` scored: ROBUSTNESS_SCHEMA rows, and per shift the first
    image as (title, image, true instances, predicted instances) for a picture."""

    rows: list[dict[str, Any]]
    examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]


def evaluate_shifts(
    predictor: Any,
    items: Sequence[Any],
    names: Sequence[str],
    split_touching: bool = True,
    domain_images: int = 16,
    progress: bool = True,
) -> ShiftEvaluation:
    """Score every image under every shift (and each synthetic domain's images)."""
    from tqdm import tqdm

    from emseg_search.inference.evaluation import score_image

    total = sum(domain_images if n in DOMAINS else len(items) for n in names)
    done = ShiftEvaluation([], [])
    bar = tqdm(total=total, desc="robustness", unit="image", disable=not progress)
    for name in names:
        group = domain_items(name, domain_images) if name in DOMAINS else shifted_items(name, items)
        kind = "domain" if name in DOMAINS else SHIFTS[name].kind
        for k, item in enumerate(group):
            row, seg, _ = score_image(predictor, item, split_touching)
            done.rows.append({"shift": name, "shift_kind": kind, **row})
            if k == 0:
                scores = f"IoU {row['iou']:.3f}, particle F1 {row['particle_f1']:.2f}"
                title = f"{name}: {item.name}\n{scores}"
                done.examples.append((title, item.image, item.instances, seg.instances))
            bar.update(1)
            bar.set_postfix_str(name)
    bar.close()
    return done


def summarize_shifts(rows: Sequence[dict[str, Any]]) -> Any:
    """Per shift: images, pooled pixel IoU and Dice, particle F1 (summed matches), and the
    IoU / F1 change against ``none``; a pandas DataFrame in the order the shifts were run.
    ``analysis.intervals.shift_change_intervals`` gives the same table with an interval for each
    change."""
    import pandas as pd

    from emseg_search.inference.evaluation import summarize

    frame = pd.DataFrame(list(rows))
    out = []
    for shift in dict.fromkeys(frame["shift"]):
        sub = frame[frame["shift"] == shift]
        s = summarize(sub.to_dict("records"))
        out.append(
            {
                "shift": shift,
                "kind": sub["shift_kind"].iloc[0],
                "images": int(s["images"]),
                "iou": s["iou"],
                "dice": s["dice"],
                "particle_f1": s["particle_f1"],
            }
        )
    table = pd.DataFrame(out)
    ref = table[table["shift"] == "none"]
    if len(ref):
        table["iou_change"] = table["iou"] - float(ref["iou"].iloc[0])
        table["f1_change"] = table["particle_f1"] - float(ref["particle_f1"].iloc[0])
    return table


def robustness_score(table: Any) -> dict[str, float]:
    """The benchmark's single numbers: mean IoU and mean particle F1 over every shift and
    domain except ``none`` (and the reference IoU / F1 beside them)."""
    shifted = table[table["shift"] != "none"]
    ref = table[table["shift"] == "none"]
    return {
        "robustness_iou": float(shifted["iou"].mean()) if len(shifted) else float("nan"),
        "robustness_f1": float(shifted["particle_f1"].mean()) if len(shifted) else float("nan"),
        "reference_iou": float(ref["iou"].iloc[0]) if len(ref) else float("nan"),
        "reference_f1": float(ref["particle_f1"].iloc[0]) if len(ref) else float("nan"),
        "shifts": int(len(shifted)),
    }
