"""SearchContext: a trial's data derived from what run_search resolved once equals what
prepare_data gives for that trial's own configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from emseg_search.search.trainable import SPLIT_FIELDS
from emseg_search.space.spec import space_from_dict
from emseg_search.train.data import prepare_data

BASE = {
    "name": "t",
    "budget": {"num_samples": 2},
    "scheduler": {"max_epochs": 1},
    "fixed": {"tile_size": 64, "encoder": "mobilenet_v2"},
}


@pytest.mark.parametrize(
    "parameters",
    [
        {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
        # pretrained weights change the normalisation, not the split
        {"encoder_weights": {"type": "categorical", "choices": [None, "imagenet-offline"]}},
        # a sampled split field: each trial resolves its own split
        {"val_fraction": {"type": "categorical", "choices": [0.2, 0.5]}},
    ],
    ids=["lr", "encoder_weights", "val_fraction"],
)
def test_trial_data_equals_prepare_data(
    parameters: dict, make_context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = space_from_dict({**BASE, "parameters": parameters})
    context = make_context(space, tmp_path)
    (name, spec), *_ = parameters.items()
    values = spec.get("choices") or [spec["low"], spec["high"]]
    calls = []
    import emseg_search.search.trainable as trainable

    monkeypatch.setattr(
        trainable, "prepare_data", lambda cfg: calls.append(cfg) or prepare_data(cfg)
    )
    for value in values:
        cfg = context.trial_config({name: value})
        prepared, fingerprint = context.trial_data(cfg)
        want, _, want_fingerprint = prepare_data(cfg)
        assert prepared == want, value
        assert fingerprint == want_fingerprint
    # the data set is read again only when the split depends on the trial
    assert bool(calls) == (name in SPLIT_FIELDS)


def test_normalisation_follows_the_trial_not_the_probe(make_context, tmp_path: Path) -> None:
    space = space_from_dict(
        {
            **BASE,
            "parameters": {
                "encoder_weights": {"type": "categorical", "choices": [None, "imagenet-offline"]}
            },
        }
    )
    context = make_context(space, tmp_path)
    offline, _ = context.trial_data(context.trial_config({"encoder_weights": "imagenet-offline"}))
    plain, _ = context.trial_data(context.trial_config({"encoder_weights": None}))
    assert offline.normalization == "encoder weights (imagenet-offline)"
    assert plain.normalization == "training-data fingerprint"
    assert (
        (offline.train, offline.val)
        == (plain.train, plain.val)
        == (
            context.prepared.train,
            context.prepared.val,
        )
    )
