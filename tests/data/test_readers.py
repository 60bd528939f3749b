"""Readers: every supported format becomes one grey channel; bad files raise FileProblem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from emseg_search.data import FileProblem, image_to_float01, read_image, read_mask


def _grey(h: int = 20, w: int = 30) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


def test_grey_saved_as_rgb_loses_nothing(tmp_path: Path) -> None:
    g = _grey()
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == g.shape
    np.testing.assert_array_equal(out, g)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    g = _grey()
    Image.fromarray(np.stack([g, g, g, np.full_like(g, 255)], -1)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), g)


def test_true_colour_warns_and_converts(tmp_path: Path) -> None:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match="c.png: true-colour"):
        out = read_image(tmp_path / "c.png")
    assert out.shape == (10, 10)
    assert out[0, 0] == round(0.299 * 200)


def test_16bit_png_and_tiff_keep_their_depth(tmp_path: Path) -> None:
    img = (np.arange(400).reshape(20, 20) * 10).astype(np.uint16)  # 12-bit range
    Image.fromarray(img).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", img)
    for name in ("a.png", "b.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, img)
    f = image_to_float01(img)
    assert f.dtype == np.float32 and f.min() == 0.0 and f.max() == 1.0


def test_float_and_planar_tiff(tmp_path: Path) -> None:
    f = np.linspace(-3, 5, 600, dtype=np.float32).reshape(20, 30)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff"), f)
    planar = np.stack([_grey()] * 3)  # (3, H, W) as some microscopes write
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="minisblack", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), _grey())


def test_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (20, 30) and out.dtype == np.uint8


def test_uint8_to_float01_known_answer() -> None:
    out = image_to_float01(np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b"not an image at all"), "cannot be decoded"),
        (lambda p: p.write_bytes(b""), "cannot be decoded"),
    ],
)
def test_garbage_files_name_the_file(tmp_path: Path, write, message: str) -> None:
    p = tmp_path / "junk.png"
    write(p)
    with pytest.raises(FileProblem, match=f"junk.png: {message}"):
        read_image(p)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    big = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileProblem, match=r"t.png: cannot be decoded .*truncated"):
        read_image(tmp_path / "t.png")


def test_stack_is_rejected(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((7, 20, 20), np.uint8))
    with pytest.raises(FileProblem, match=r"s.tif: has shape \(7, 20, 20\)"):
        read_image(tmp_path / "s.tif")


def test_binary_masks_become_connected_components(tmp_path: Path) -> None:
    m = np.zeros((20, 20), np.uint8)
    m[2:6, 2:6] = 255
    m[10:15, 10:12] = 255
    for name, arr in (("a.png", m), ("b.png", (m > 0).astype(np.uint8))):
        Image.fromarray(arr).save(tmp_path / name)
        labels, is_instance = read_mask(tmp_path / name)
        assert not is_instance
        assert sorted(np.unique(labels)) == [0, 1, 2]
        assert (labels > 0).sum() == 16 + 10


def test_instance_labels_are_kept(tmp_path: Path) -> None:
    lab = np.zeros((20, 20), np.uint16)
    lab[:5, :5], lab[5:9, 5:9], lab[10:, 10:] = 3, 700, 12
    Image.fromarray(lab).save(tmp_path / "l.png")
    labels, is_instance = read_mask(tmp_path / "l.png")
    assert is_instance
    np.testing.assert_array_equal(labels, lab)


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.array([[0, 128, 255, 255]] * 4, np.uint8), "neither binary"),
        (np.array([[0, 0.5, 1, 1]] * 4, np.float32), "fractional"),
        (np.array([[0, -1, 2, 2]] * 4, np.int16), "negative"),
    ],
)
def test_bad_mask_values_name_the_file(tmp_path: Path, arr: np.ndarray, message: str) -> None:
    p = tmp_path / "bad_mask.tif"
    tifffile.imwrite(p, arr)
    with pytest.raises(FileProblem, match=f"bad_mask.tif: .*{message}"):
        read_mask(p)


def test_colour_mask_is_rejected(tmp_path: Path) -> None:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[2:5, 2:5] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "cm.png")
    with pytest.raises(FileProblem, match="cm.png: is a colour mask"):
        read_mask(tmp_path / "cm.png")


def _valid_bytes(suffix: str) -> bytes:
    """A small valid image file of the given type, as bytes to mutate."""
    import io

    buf = io.BytesIO()
    if suffix == ".png":
        Image.fromarray(_grey(12, 9)).save(buf, format="PNG")
    elif suffix == ".jpg":
        Image.fromarray(_grey(12, 9)).save(buf, format="JPEG")
    else:
        tifffile.imwrite(buf, _grey(12, 9))
    return buf.getvalue()


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_fuzzed_files_raise_only_file_problems(suffix: str, tmp_path: Path) -> None:
    """Random bytes and mutated valid files (flipped bytes, cut short): the readers return an
    image or raise FileProblem naming the file, never another exception (issue 18)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid = _valid_bytes(suffix)
    path = tmp_path / f"fuzz{suffix}"
    outcomes: set[str] = set()
    mutated = st.tuples(
        st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=8),
        st.integers(0, len(valid)),
    ).map(lambda m: _mutate(valid, *m))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=2048), mutated))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        for read in (read_image, read_mask):
            try:
                read(path)
                outcomes.add("read")
            except FileProblem as exc:
                assert path.name in str(exc)
                outcomes.add("refused")

    check()
    assert "refused" in outcomes  # the fuzzing reached the error paths


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    """``data`` with bytes replaced at the given offsets, then cut to ``cut`` bytes."""
    out = bytearray(data)
    for offset, value in flips:
        out[offset] = value
    return bytes(out[:cut])
