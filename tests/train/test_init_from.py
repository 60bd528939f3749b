"""Fine-tuning (`init_from`): the whole model starts from an artifact's weights and keeps its
normalisation; an artifact that is missing or builds another network is refused before
training, naming the field; a resumed run starts from its own checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_tiny_artifact

from emseg_search.config import ConfigError, TrialConfig
from emseg_search.data.synth.default_set import ensure_synthetic_data
from emseg_search.inference.artifact import load_artifact
from emseg_search.train.checkpoint import latest_checkpoint, load_checkpoint
from emseg_search.train.data import prepare_data
from emseg_search.train.init_from import check_init_from
from emseg_search.train.session import LocalSession
from emseg_search.train.worker import build_run, run_worker


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_data(tmp_path_factory.mktemp("data") / "synth", n=6, size=64)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(data: Path, **fields) -> TrialConfig:
    base = dict(
        data=str(data),
        arch="unet",
        encoder="resnet18",
        tile_size=64,
        tiles_per_image=2,
        batch_size=2,
        epochs=1,
        warmup_epochs=0,
        augment="flips",
        val_fraction=0.34,
    )
    return TrialConfig(**{**base, **fields})


def test_the_whole_model_starts_from_the_artifact_with_its_normalisation(
    synth: Path, tmp_path: Path, one_thread
) -> None:
    art_dir = write_tiny_artifact(tmp_path / "start", seed=7, mean=0.31, std=0.17)
    cfg = _cfg(synth, init_from=str(art_dir))
    check_init_from(cfg)
    prepared, _, _ = prepare_data(cfg)
    assert (prepared.mean, prepared.std) == pytest.approx((0.31, 0.17))
    assert prepared.normalization == f"init_from ({art_dir.absolute()})"

    run = build_run(cfg, prepared, LocalSession(tmp_path / "ckpt"))
    start = load_artifact(art_dir).model.state_dict()
    got = run.model.state_dict()
    assert set(got) == set(start)
    assert all(torch.equal(got[k], start[k]) for k in start)
    # without init_from the same seed builds other weights: the test can tell them apart
    fresh = build_run(_cfg(synth), prepare_data(_cfg(synth))[0], LocalSession(tmp_path / "f"))
    assert not torch.equal(
        fresh.model.state_dict()["encoder.conv1.weight"], start["encoder.conv1.weight"]
    )


def test_a_resumed_fine_tuning_run_starts_from_its_own_checkpoint(
    synth: Path, tmp_path: Path, one_thread
) -> None:
    art_dir = write_tiny_artifact(tmp_path / "start", seed=7)
    cfg = _cfg(synth, init_from=str(art_dir), epochs=1, lr=1e-2)

    def config(c: TrialConfig) -> dict:
        return {"trial": c.to_dict(), "prepared": prepare_data(c)[0].to_dict(), "threads": 1}

    folder = tmp_path / "ckpt"
    run_worker(config(cfg), LocalSession(folder))
    trained = load_checkpoint(latest_checkpoint(folder)).state["model"]
    again = LocalSession(folder)
    run = build_run(cfg.model_copy(update={"epochs": 2}), prepare_data(cfg)[0], again)
    from emseg_search.train.worker import restore

    progress = restore(run, again)
    assert progress.start == 1
    got = run.bare_model.state_dict()
    assert all(torch.equal(got[k], trained[k]) for k in trained)
    start = load_artifact(art_dir).model.state_dict()
    assert not all(torch.equal(got[k], start[k]) for k in start), "training changed nothing"


def test_an_artifact_of_another_network_is_refused_naming_the_field(
    synth: Path, tmp_path: Path
) -> None:
    other = write_tiny_artifact(tmp_path / "fpn", arch="fpn")
    with pytest.raises(ValueError, match=r"^init_from: .*fpn/resnet18.*do not fit.*unet/resnet18"):
        check_init_from(_cfg(synth, init_from=str(other)))
    with pytest.raises(ValueError, match=r"^init_from: .*nowhere.*not a folder"):
        check_init_from(_cfg(synth, init_from=str(tmp_path / "nowhere")))


def test_init_from_is_an_absolute_path() -> None:
    cfg = TrialConfig(init_from="results/x/model")
    assert Path(cfg.init_from).is_absolute() and cfg.init_from.endswith("results/x/model")
    with pytest.raises(ConfigError, match="init_from"):
        TrialConfig.from_dict({"init_from": 3.5})


def test_fine_tuning_needs_no_encoder_weights_cache(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    """A recipe that names imagenet-offline weights fine-tunes on a machine without them: the
    whole model comes from init_from."""
    from emseg_search.models.pretrained import WeightsUnavailableError
    from emseg_search.models.registry import check_weights_available

    monkeypatch.setenv("EMSEG_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    cfg = _cfg(synth, encoder="mobilenet_v2", encoder_weights="imagenet-offline")
    with pytest.raises(WeightsUnavailableError, match="weights fetch"):  # a fresh run's need
        check_weights_available(cfg)
    art_dir = write_tiny_artifact(tmp_path / "start", seed=3, encoder="mobilenet_v2")
    tuned = cfg.model_copy(update={"init_from": str(art_dir)})
    check_init_from(tuned)
    run = build_run(tuned, prepare_data(tuned)[0], LocalSession(tmp_path / "ckpt"))
    start = load_artifact(art_dir).model.state_dict()
    assert all(torch.equal(run.model.state_dict()[k], start[k]) for k in start)
