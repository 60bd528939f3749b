"""Tests for the procedural EM data set (emseg_search.data.synth.generator) and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emseg_search.cli.synth import main
from emseg_search.data.synth import generator as synth
from emseg_search.data.synth.generator import (
    STYLES,
    SynthSample,
    generate_sample,
    write_synthetic_dataset,
)
from emseg_search.data.synth.shapes import Particle

SIZE = 64


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("a") / "ds", n=6, seed=3, size=SIZE)


def test_same_seed_is_byte_identical(ds: Path, tmp_path: Path) -> None:
    again = write_synthetic_dataset(tmp_path / "ds", n=6, seed=3, size=SIZE)
    a, b = _files(ds), _files(again)
    assert a.keys() == b.keys()
    assert len(a) == 2 * 6 + 3
    assert a == b


def test_other_seed_differs(ds: Path, tmp_path: Path) -> None:
    other = _files(write_synthetic_dataset(tmp_path / "ds", n=6, seed=4, size=SIZE))
    same = _files(ds)
    differ = [k for k in same if k.startswith("images/") and same[k] != other[k]]
    assert len(differ) == 6


def test_image_i_does_not_depend_on_n(ds: Path, tmp_path: Path) -> None:
    short = write_synthetic_dataset(tmp_path / "ds", n=3, seed=3, size=SIZE)
    for sub in ("images", "segmaps"):
        for i in range(3):
            name = f"{sub}/synth_{i:05d}.png"
            assert (short / name).read_bytes() == (ds / name).read_bytes()
    direct = generate_sample([3, 2], SIZE)
    assert np.array_equal(np.array(Image.open(ds / "images/synth_00002.png")), direct.image)


def test_layout_splits_and_metadata(ds: Path) -> None:
    names = [f"synth_{i:05d}" for i in range(6)]
    train = (ds / "train.csv").read_text().split()
    test = (ds / "test.csv").read_text().split()
    assert train + test == names
    assert len(test) == 1  # round(6 * 0.2)
    meta = json.loads((ds / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["n"] == 6 and meta["size"] == [SIZE, SIZE]
    assert meta["generator"] == synth.GENERATOR_VERSION
    assert not (ds / ".tmp-synth").exists()
    for name in names:
        img = Image.open(ds / "images" / f"{name}.png")
        seg = np.array(Image.open(ds / "segmaps" / f"{name}.png"))
        assert img.mode == "L" and img.size == (SIZE, SIZE)
        assert seg.dtype == np.uint16 and seg.shape == (SIZE, SIZE)


def test_segmap_png_keeps_16_bit_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) % 1000
    fake = SynthSample(np.zeros((SIZE, SIZE), np.uint8), inst, "tem")
    monkeypatch.setattr(synth, "generate_sample", lambda *a, **k: fake)
    out = write_synthetic_dataset(tmp_path / "ds", n=1, size=SIZE, progress=True)
    back = np.array(Image.open(out / "segmaps" / "synth_00000.png"))
    assert back.dtype == np.uint16 and back.max() == 999
    assert np.array_equal(back, inst)


@pytest.mark.parametrize("size", [SIZE, (48, 80)])
def test_sample_dtypes_shapes_and_consecutive_ids(size: int | tuple[int, int]) -> None:
    hw = (size, size) if isinstance(size, int) else size
    styles = set()
    for i in range(12):
        s = generate_sample([11, i], size)
        styles.add(s.style)
        assert s.image.dtype == np.uint8 and s.image.shape == hw
        assert s.instances.dtype == np.uint16 and s.instances.shape == hw
        ids = np.unique(s.instances)
        n = int(ids.max())
        assert n >= 1
        assert np.array_equal(ids, np.arange(0 if (s.instances == 0).any() else 1, n + 1))
        assert s.image.max() > s.image.min()
    assert styles == set(STYLES)


def test_forced_style_and_int_seed() -> None:
    for style in STYLES:
        assert generate_sample(5, SIZE, style=style).style == style
    a, b = generate_sample(5, SIZE), generate_sample([5], SIZE)
    assert a.image.shape == b.image.shape


@pytest.mark.parametrize(("style", "sign"), [("tem", -1), ("stem", 1)])
def test_contrast_polarity(style: str, sign: int) -> None:
    checked = 0
    for i in range(8):
        s = generate_sample([7, i], 96, style=style)
        fg = s.instances > 0
        bg = ~fg & ~s.overlay
        if fg.sum() < 20 or bg.sum() < 20:
            continue
        diff = float(s.image[fg].mean()) - float(s.image[bg].mean())
        assert sign * diff > 5, (i, diff)
        checked += 1
    assert checked >= 6


def test_overlays_are_background_in_the_mask() -> None:
    found = 0
    for i in range(200):
        s = generate_sample([1, i], 96)
        if s.annotations:
            assert s.overlay is not None and s.overlay.any()
            assert not s.instances[s.overlay].any()
            found += 1
        if found >= 3:
            break
    assert found >= 3


def test_relabel_keeps_depth_order() -> None:
    inst = np.array([[0, 5, 5], [9, 2, 0]], np.int32)
    assert synth._relabel(inst).tolist() == [[0, 2, 2], [3, 1, 0]]


def _disc(cx: float, cy: float, r: float) -> Particle:
    return Particle(
        kind="ellipse", cx=cx, cy=cy, angle=0.0, a=r, b=r, normals=None, supports=None,
        power=0.0, rough=None, bound=r, weight=1.0, rounded=True, bevel=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("style", STYLES)
def test_later_particles_occlude_earlier(style: str) -> None:
    parts = [_disc(20, 20, 10), _disc(30, 20, 10), _disc(60, 60, 3)]
    rng = np.random.default_rng(0)
    if style == "sem":
        img, inst = synth._render_sem(rng, parts, 64, 64)
    else:
        img, inst = synth._render_tem_stem(rng, style, parts, 64, 64)
    assert inst[20, 25] == 2  # the overlap belongs to the particle drawn last (on top)
    assert inst[20, 12] == 1 and inst[20, 38] == 2 and inst[60, 60] == 3 and inst[2, 2] == 0
    assert img.shape == (64, 64)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"n": 0}, "`n`"),
        ({"n": 2, "size": 16}, "`size`"),
        ({"n": 2, "size": (64, 20)}, "`size`"),
        ({"n": 2, "style": "cryo"}, "`style`"),
        ({"n": 2, "test_fraction": 1.0}, "`test_fraction`"),
        ({"n": 2, "seed": -1}, "`seed`"),
        ({"n": 2, "scene": "lattice"}, "`scene`"),
        ({"n": 2, "scene": "dense-small-carbon", "style": "sem"}, "`scene`"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        write_synthetic_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_generate_sample_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="tem"):
        generate_sample(0, SIZE, style="xray")


def test_cli_writes_layout_and_refuses_non_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--n", "3", "--size", "48", "--style", "sem"]
    assert main(args) == 0
    assert "3 synthetic images" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"synth_{i:05d}.png" for i in range(3)
    ]
    assert (out / "segmaps").is_dir() and (out / "train.csv").is_file()
    assert json.loads((out / "synth.json").read_text())["style"] == "sem"
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:3], "2", *args[4:], "--overwrite"]) == 0
    assert len(list((out / "images").iterdir())) == 2
    assert main(["--out", str(tmp_path / "bad"), "--n", "0"]) == 2
    assert "`n`" in capsys.readouterr().err


def test_cli_writes_one_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`synth --scene dense-small-carbon` writes that scene only (the benchmark's hard domain, as
    training or test data of its own), and refuses --style beside it."""
    out = tmp_path / "dense"
    assert (
        main(["--out", str(out), "--n", "2", "--size", "96", "--scene", "dense-small-carbon"]) == 0
    )
    assert "scene dense-small-carbon" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["scene"] == "dense-small-carbon"
    for i in range(2):
        written = np.array(Image.open(out / "segmaps" / f"synth_{i:05d}.png"))
        drawn = generate_sample([0, i], 96, scene="dense-small-carbon").instances
        np.testing.assert_array_equal(written, drawn)
    bad = ["--out", str(tmp_path / "x"), "--scene", "dense-small-carbon", "--style", "tem"]
    assert main(bad) == 2
    assert "--style" in capsys.readouterr().err


def test_rewrite_replaces_the_set_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path / "ds", n=4, seed=1, size=SIZE)
    (out / "notes.txt").write_text("mine")
    write_synthetic_dataset(out, n=2, seed=2, size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == [
        "images",
        "notes.txt",
        "segmaps",
        "synth.json",
        "test.csv",
        "train.csv",
    ]  # no temporary or set-aside folder, and the user's file is kept
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "synth_00000.png",
        "synth_00001.png",
    ]
    assert json.loads((out / "synth.json").read_text())["seed"] == 2
    named = (out / "train.csv").read_text().split() + (out / "test.csv").read_text().split()
    assert sorted(named) == ["synth_00000", "synth_00001"]


def test_montage_renders_without_touching_the_matplotlib_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    from emseg_search.data.synth.montage import render_montage

    def no_switch(*args: object, **kwargs: object) -> None:
        raise AssertionError("render_montage switched the process's matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    before = matplotlib.rcParams._get_backend_or_none()
    samples = [generate_sample([0, i], SIZE) for i in range(3)]
    out = render_montage(tmp_path / "m.png", samples, n_synth=3)
    assert out.is_file() and Image.open(out).size[0] > 100
    assert matplotlib.rcParams._get_backend_or_none() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]
