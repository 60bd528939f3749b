"""The real EMPS training data (366 images) at $EMSEG_EMPS_DIR reads, validates and fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from emseg_search.data import compute_fingerprint, load_data, resolve_split

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def emps():
    return load_data(Path(os.environ["EMSEG_EMPS_DIR"]))


def test_all_366_images_read_as_grey_with_instance_labels(emps) -> None:
    assert emps.index.layout == "emps"
    assert len(emps.items) == 366
    assert len(emps.index.splits["train"]) == 366
    for m in emps.items:
        assert m.image.ndim == 2 and m.image.dtype == np.uint8  # RGB-saved grey -> one channel
        assert m.instances.shape == m.image.shape and m.instances.dtype == np.uint16
        assert min(m.image.shape) >= 512


def test_fingerprint(emps) -> None:
    fp = compute_fingerprint(emps.items)
    assert fp.n_images == 366 and fp.dtypes == ["uint8"]
    assert fp.height.min == 512 and fp.width.min == 512
    # measured 2026-11-24: 8927 particles, foreground 0.345, median particle area 958 px
    assert fp.n_particles == 8927
    assert fp.images_without_particles == 0
    assert 0.30 < fp.foreground_fraction < 0.40
    assert 0.40 < fp.intensity_mean < 0.55 and 0.2 < fp.intensity_std < 0.3
    assert 500 < fp.particle_area_px["p50"] < 1500


def test_seeded_validation_split_of_the_train_csv(emps) -> None:
    split = resolve_split(emps.index, val_fraction=0.2, seed=0)
    assert len(split.val) == 74 and len(split.train) == 292
    assert not set(split.train) & set(split.val)


def test_committed_validation_split_is_the_seeded_one_and_never_trained_on(emps) -> None:
    """configs/splits/emps_val.csv (the recipes' --val-file) names 74 real images, equals the
    seed-0 20 % split, and resolve_split keeps all of them out of training."""
    path = Path(__file__).resolve().parents[2] / "configs" / "splits" / "emps_val.csv"
    split = resolve_split(emps.index, val_file=path)
    assert len(split.val) == 74 and not set(split.val) & set(split.train)
    assert len(split.train) + len(split.val) == 366
    assert sorted(split.val) == sorted(resolve_split(emps.index, 0.2, 0).val)


def test_committed_test_papers_share_no_paper_with_the_rest(emps) -> None:
    """configs/splits/emps_test_papers.csv (the EMPS study's held-out part) is the seed-0
    paper-grouped 20 % split: no paper (metadata.csv doi) on both sides, and a search given it
    as test_file with group_by trains and validates on the other papers only, grouped too."""
    from emseg_search.data import read_groups, split_names

    path = Path(__file__).resolve().parents[2] / "configs" / "splits" / "emps_test_papers.csv"
    test = path.read_text().split()
    groups = read_groups(emps.root, list(emps.names), "metadata.csv:doi")
    assert len(set(groups.values())) == 247
    assert sorted(test) == sorted(split_names(list(emps.names), 0.2, 0, groups)[1])
    rest = set(emps.names) - set(test)
    assert not {groups[n] for n in test} & {groups[n] for n in rest}
    split = resolve_split(emps.index, 0.2, 0, group_by="metadata.csv:doi", test_file=path)
    assert not set(split.train + split.val) & set(test)
    assert len(split.train) + len(split.val) == 366 - len(test)
    assert not {groups[n] for n in split.train} & {groups[n] for n in split.val}
