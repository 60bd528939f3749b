"""Procedural EM micrographs (TEM / HAADF-STEM / SEM) with instance masks, in the EMPS layout."""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from emseg_search.atomic import replace_dir, write_text
from emseg_search.data.synth.shapes import (
    Particle,
    grain,
    loguniform,
    rasterize,
    sample_dense_small,
    sample_particles,
    smooth_noise,
)

STYLES: tuple[str, ...] = ("tem", "stem", "sem")
# Scenes: special layouts drawn on purpose (the default draws from every layout).
# "dense-small-carbon": bright-field TEM of dense small particles (about 6-16 px at 256 px) on a
# strongly textured amorphous-carbon film at a low dose, the case that EMPS-trained models miss.
SCENES: tuple[str, ...] = ("dense-small-carbon",)
GENERATOR_VERSION = "emseg-synth-1"
_MIN_SIZE = 32


@dataclass(frozen=True, eq=False)
class SynthSample:
    """One synthetic micrograph: uint8 (H, W) image, uint16 (H, W) instance ids, its style."""

    image: np.ndarray
    instances: np.ndarray
    style: str
    annotations: tuple[str, ...] = ()  # burned-in overlays, e.g. ("label:(a)", "scalebar:50 nm")
    overlay: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool overlay pixels


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """Validate `size` and return (H, W)."""
    try:
        h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be an int or an (H, W) pair, got {size!r}") from None
    if min(h, w) < _MIN_SIZE:
        raise ValueError(f"`size` must be >= {_MIN_SIZE} px on each side, got {size!r}")
    return int(h), int(w)


def _check_style(style: str | None) -> None:
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown `style` {style!r}; valid styles: {sorted(STYLES)} or None")


def _check_scene(scene: str | None) -> None:
    if scene is not None and scene not in SCENES:
        raise ValueError(f"unknown `scene` {scene!r}; valid scenes: {sorted(SCENES)} or None")


def _render_tem_stem(
    rng: np.random.Generator,
    style: str,
    parts: list[Particle],
    h: int,
    w: int,
    film_gain: float = 1.0,
    contrast: tuple[float, float] = (0.25, 2.6),
) -> tuple[np.ndarray, np.ndarray]:
    """Mass-thickness (TEM, dark) or Z-contrast (HAADF-STEM, bright) projection image;
    ``film_gain`` scales the support film's texture, ``contrast`` bounds the particles'
    absorption (TEM)."""
    inst = np.zeros((h, w), np.int32)
    thick = np.zeros((h, w), np.float32)
    fringe = rng.uniform(0.1, 0.35) if style == "tem" and rng.random() < 0.15 else 0.0
    period = rng.uniform(2.5, 5.0)
    for i, p in enumerate(parts):
        fp = rasterize(p, h, w)
        if fp is None:
            continue
        t = p.weight * fp.height * fp.alpha
        if fringe and fp.scale > 6:  # HRTEM lattice fringes, one orientation per crystal
            k = 2 * np.pi / period * np.array([math.cos(p.angle * 3), math.sin(p.angle * 3)])
            yy, xx = np.ogrid[fp.sl]
            t = t * (1.0 + fringe * np.cos(k[0] * xx + k[1] * yy).astype(np.float32))
        thick[fp.sl] += t
        inst[fp.sl][fp.mask] = i + 1
    s = min(h, w)
    # Particle grain: polycrystalline / mesoporous texture modulates the projected thickness.
    thick *= 1.0 + rng.uniform(0.0, 0.25) * grain(rng, h, w, rng.uniform(0.6, 2.5))
    film = rng.uniform(0.01, 0.08) * smooth_noise(rng, h, w, rng.uniform(s / 6, s / 1.5))
    film += film_gain * rng.uniform(0.01, 0.06) * grain(rng, h, w, rng.uniform(0.5, 1.3))
    if rng.random() < 0.15:  # lacey / mottled carbon: thicker film islands
        blob = smooth_noise(rng, h, w, rng.uniform(s / 20, s / 8))
        film += rng.uniform(0.03, 0.12) * ndimage.gaussian_filter(
            (blob > rng.uniform(-0.3, 0.8)).astype(np.float32), rng.uniform(1.0, 3.0)
        )
    if style == "tem":
        img = np.exp(-(rng.uniform(0.05, 0.3) + film + loguniform(rng, *contrast) * thick))
        if rng.random() < 0.5:  # defocus Fresnel fringe: bright halo outside the edges
            img += rng.uniform(0.2, 1.2) * (img - ndimage.gaussian_filter(img, rng.uniform(1, 3)))
    else:
        img = rng.uniform(0.03, 0.15) + 0.5 * np.abs(film) + rng.uniform(0.5, 1.5) * thick
    return img.astype(np.float32), inst


def _render_sem(
    rng: np.random.Generator, parts: list[Particle], h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Secondary-electron image: occluding surfaces, tilt-dependent yield, bright edges."""
    s = min(h, w)
    inst = np.zeros((h, w), np.int32)
    base = rng.uniform(0.45, 0.9)
    edge_k, cap = rng.uniform(0.3, 1.2), rng.uniform(1.8, 3.5)
    zfac = rng.uniform(0.6, 1.6)
    phi = rng.uniform(0, 2 * np.pi)
    lx, ly, shade_k = math.cos(phi), math.sin(phi), rng.uniform(0.0, 0.25)
    cov = np.zeros((h, w), np.float32)
    drawn = []
    for i, p in enumerate(parts):
        fp = rasterize(p, h, w)
        if fp is None:
            continue
        z = fp.height * (fp.scale * (zfac if p.rounded else 0.35 * zfac))
        if min(z.shape) >= 2:
            gy, gx = np.gradient(z)
        else:
            gy = gx = np.zeros_like(z)
        sec = np.sqrt(1.0 + gx * gx + gy * gy)
        val = base * p.weight**0.3 * (1.0 + edge_k * (np.minimum(sec, cap) - 1.0))
        val += shade_k * (gx * lx + gy * ly) / sec
        drawn.append((fp, val))
        np.maximum(cov[fp.sl], fp.alpha, out=cov[fp.sl])
        inst[fp.sl][fp.mask] = i + 1
    img = rng.uniform(0.12, 0.55) + rng.uniform(0.01, 0.08) * smooth_noise(
        rng, h, w, rng.uniform(s / 8, s / 2)
    )
    img += rng.uniform(0.005, 0.05) * grain(rng, h, w, rng.uniform(0.6, 1.5))
    if drawn and rng.random() < 0.7:  # substrate shadowed next to particles (detector side)
        sig = max(1.0, s / 64 * rng.uniform(0.5, 2.0))
        img *= 1.0 - rng.uniform(0.1, 0.5) * ndimage.gaussian_filter(cov, sig)
    for fp, val in drawn:
        img[fp.sl] = img[fp.sl] * (1.0 - fp.alpha) + val * fp.alpha
    img += cov * rng.uniform(0.0, 0.15) * grain(rng, h, w, rng.uniform(0.7, 2.5))
    return img.astype(np.float32), inst


def _finish(
    rng: np.random.Generator, img: np.ndarray, dose: tuple[float, float] = (25.0, 2000.0)
) -> np.ndarray:
    """Illumination, blur, shot/read noise (``dose``: mean counts per pixel), figure resampling
    and an 8-bit contrast stretch."""
    h, w = img.shape
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j].astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    illum = 1.0 + rng.uniform(0, 0.2) * (xx * math.cos(phi) + yy * math.sin(phi))
    illum -= rng.uniform(-0.05, 0.25) * (xx * xx + yy * yy) / 2
    img = ndimage.gaussian_filter(img * illum, loguniform(rng, 0.4, 1.8))
    dose = loguniform(rng, *dose) / max(float(img.mean()), 1e-3)
    img = rng.poisson(np.clip(img, 0, None) * dose).astype(np.float32) / dose
    img += rng.normal(0, rng.uniform(0.002, 0.03), img.shape).astype(np.float32)
    if rng.random() < 0.5:  # the figure was rescaled for publication: correlated noise
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.9))
    sub = img[::2, ::2]
    lo, hi = np.percentile(sub, [rng.uniform(0.05, 2.0), rng.uniform(98.0, 99.95)])
    out_lo, out_hi = rng.uniform(0, 40), rng.uniform(200, 255)
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) ** rng.uniform(0.8, 1.25)
    return np.round(out_lo + x * (out_hi - out_lo)).astype(np.uint8)


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: small bitmap font
        return ImageFont.load_default()


_Draws = tuple[ImageDraw.ImageDraw, ImageDraw.ImageDraw]  # (image, overlay mask)


def _text(
    draws: _Draws, img: np.ndarray, xy: tuple[int, int], text: str, px: int,
    box: int = 0, ink: int | None = None, bold: int = 0,
) -> None:  # fmt: skip
    """Draw `text` on image and overlay; ink contrasts with the ground (box 1: white, 2: black)."""
    font = _font(px)
    x0, y0, x1, y1 = draws[0].textbbox(xy, text, font=font, stroke_width=bold)
    pad = max(1, px // 6)
    rect = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    if box:
        ink = 0 if box == 1 else 255
        for d in draws:
            d.rectangle(rect, fill=255 - ink if d is draws[0] else 255)
    elif ink is None:
        ground = img[max(rect[1], 0) : max(rect[3], 1), max(rect[0], 0) : max(rect[2], 1)]
        ink = 0 if ground.size == 0 or float(ground.mean()) > 128 else 255
    for d, fill in zip(draws, (ink, 255), strict=True):
        # The default font has no micro sign: draw "u" and add the descending stem.
        head, micro, tail = text.partition("µ")
        d.text(xy, head + ("u" if micro else "") + tail, font=font, fill=fill, stroke_width=bold,
               stroke_fill=fill)  # fmt: skip
        if micro:
            ux0, _, _, uy1 = d.textbbox((xy[0] + d.textlength(head, font=font), xy[1]), "u",
                                        font=font, stroke_width=bold)  # fmt: skip
            stem = max(1, round(px * 0.08)) + bold
            d.rectangle((ux0, uy1 - px * 0.3, ux0 + stem - 1, uy1 + px * 0.2), fill=fill)


def _annotate(
    rng: np.random.Generator, img: np.ndarray, style: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Burn in a panel label / scale bar / SEM data bar, as in published figures.

    Returns the (H, W) uint8 image, the (H, W) bool overlay mask and what was drawn.
    """
    h, w = img.shape
    s, bottom = min(h, w), h
    pim, pov = Image.fromarray(img), Image.new("L", (w, h), 0)
    draws = (ImageDraw.Draw(pim), ImageDraw.Draw(pov))
    notes: list[str] = []
    bold = int(rng.random() < 0.4) + int(s >= 384 and rng.random() < 0.3)
    if style == "sem" and rng.random() < 0.1:  # instrument data bar along the bottom
        bottom = h - max(8, int(h * rng.uniform(0.06, 0.1)))
        for d in draws:
            d.rectangle((0, bottom, w, h), fill=0 if d is draws[0] else 255)
        info = f"HV {rng.choice([2, 5, 10, 15])}.00 kV  WD {rng.uniform(3, 9):.1f} mm"
        _text(draws, img, (3, bottom + 1), info, max(6, int((h - bottom) * 0.6)), ink=255)
        notes.append("databar")
    if rng.random() < 0.2:
        text = str(rng.choice(["(a)", "(b)", "(c)", "(d)", "a", "b", "c)", "d", "A", "B", "C",
                               "(E)", "f", "b1", "II", "III"]))  # fmt: skip
        px = max(9, int(s * rng.uniform(0.06, 0.11)))
        m = int(s * rng.uniform(0.01, 0.04))
        x = m if rng.random() < 0.75 else w - m - int(draws[0].textlength(text, font=_font(px)))
        _text(draws, img, (x, m), text, px, box=int(rng.choice([0, 0, 1, 2])), bold=bold)
        notes.append(f"label:{text}")
    if rng.random() < 0.18:
        num = int(rng.choice([1, 2, 5, 10, 20, 30, 50, 100, 200, 500]))
        text = f"{num} {rng.choice(['nm', 'nm', 'µm'])}"
        px = max(8, int(s * rng.uniform(0.045, 0.08)))
        length, thick = int(w * rng.uniform(0.12, 0.3)), max(2, int(s * rng.uniform(0.01, 0.025)))
        m = int(s * rng.uniform(0.03, 0.07))
        x0 = w - m - length if rng.random() < 0.7 else m
        below = rng.random() < 0.5  # text below the bar, else above it
        text_h = draws[0].textbbox((0, 0), text, font=_font(px), stroke_width=bold)[3]
        yb = bottom - m - thick - (text_h + 3 if below else 0)
        ground = img[max(yb - px, 0) : bottom, x0 : x0 + length]
        ink = 0 if float(ground.mean()) > 128 else 255
        for d in draws:
            d.rectangle((x0, yb, x0 + length, yb + thick), fill=ink if d is draws[0] else 255)
        tx = int(x0 + (length - draws[0].textlength(text, font=_font(px))) / 2)
        ty = yb + thick + 2 if below else yb - text_h - 3
        _text(draws, img, (tx, ty), text, px, ink=ink, bold=bold)
        notes.append(f"scalebar:{text}")
    return np.array(pim, dtype=np.uint8), np.array(pov) > 0, tuple(notes)


def _relabel(inst: np.ndarray) -> np.ndarray:
    """Map surviving ids to 1..N keeping their depth order; (H, W) uint16."""
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(int(inst.max()) + 1, np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    return lut[inst]


def generate_sample(
    seed: int | Sequence[int],
    size: int | tuple[int, int] = 256,
    style: str | None = None,
    scene: str | None = None,
) -> SynthSample:
    """Render one synthetic micrograph and its instance mask from `seed` (deterministic);
    ``scene`` (one of SCENES) draws that special layout instead (its style is its own)."""
    h, w = _hw(size)
    _check_style(style)
    _check_scene(scene)
    if scene is not None:
        return _dense_small_carbon(np.random.default_rng(seed), h, w)
    rng = np.random.default_rng(seed)
    # Always draw the style so a forced style keeps the seed's layout.
    drawn_style = str(rng.choice(STYLES))
    style = style or drawn_style
    for _ in range(8):  # redraw the rare layout whose particles all fall outside the frame
        parts = sample_particles(rng, h, w)
        if style == "sem":
            img, inst = _render_sem(rng, parts, h, w)
        else:
            img, inst = _render_tem_stem(rng, style, parts, h, w)
        if inst.any():
            break
    plain = _finish(rng, img)
    image, overlay, notes = _annotate(rng, plain, style)
    if inst.any() and not inst[~overlay].any():  # an overlay hid every particle: drop it
        image, overlay, notes = plain, np.zeros_like(overlay), ()
    inst[overlay] = 0
    if rng.random() < 0.2:  # JPEG-compressed figure source
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(rng.integers(55, 93)))
        image = np.array(Image.open(buf), dtype=np.uint8)
    return SynthSample(image, _relabel(inst), style, notes, overlay)


def _dense_small_carbon(rng: np.random.Generator, h: int, w: int) -> SynthSample:
    """Bright-field TEM: dense small particles, strong amorphous-carbon texture, low dose."""
    s = min(h, w)
    for _ in range(8):
        parts = sample_dense_small(rng, h, w, (s / 40, s / 16), rng.uniform(0.15, 0.4))
        img, inst = _render_tem_stem(
            rng, "tem", parts, h, w, film_gain=rng.uniform(1.5, 3.0), contrast=(0.6, 1.2)
        )
        if inst.any():
            break
    image = _finish(rng, img, dose=(10.0, 50.0))
    return SynthSample(image, _relabel(inst), "tem")


def write_synthetic_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int | tuple[int, int] = 256,
    test_fraction: float = 0.2,
    progress: bool = False,
    style: str | None = None,
    scene: str | None = None,
) -> Path:
    """Write `n` synthetic images in the EMPS layout (images/, segmaps/, train/test.csv).

    Image i is ``generate_sample([seed, i], size, style)``; test.csv names the last
    round(n * test_fraction) images (at least one when test_fraction > 0 and n > 1). Existing
    images/, segmaps/ and split files under `out` are replaced, each swapped in whole (a
    reader never sees a half-written one), synth.json last; other files are left alone.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in [0, 1), got {test_fraction!r}")
    h, w = _hw(size)
    _check_style(style)
    _check_scene(scene)
    if scene is not None and style is not None:
        raise ValueError(f"`scene` {scene!r} has its own style; leave `style` unset")
    out = Path(out)
    tmp = out / ".tmp-synth"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "segmaps").mkdir()
    names = [f"synth_{i:05d}" for i in range(n)]
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="img")
    for i in it:
        # Child seed from (seed, i): image i does not depend on n.
        sample = generate_sample([int(seed), i], (h, w), style, scene)
        Image.fromarray(sample.image).save(tmp / "images" / f"{names[i]}.png")
        Image.fromarray(sample.instances).save(tmp / "segmaps" / f"{names[i]}.png")
    n_test = 0 if test_fraction == 0 else max(1, math.floor(n * test_fraction + 0.5))
    n_test = min(n_test, n - 1)
    splits = {"train.csv": names[: n - n_test], "test.csv": names[n - n_test :]}
    meta = {
        "generator": GENERATOR_VERSION, "seed": int(seed), "n": int(n), "size": [h, w],
        "style": style or "mixed", "test_fraction": float(test_fraction),
        **({"scene": scene} if scene else {}),
        "n_train": n - n_test, "n_test": n_test,
    }  # fmt: skip
    # Old splits go first and new ones come last, so no split file names a missing image.
    for f in (*splits, "synth.json"):
        (out / f).unlink(missing_ok=True)
    for sub in ("images", "segmaps"):
        replace_dir(tmp / sub, out / sub)
    tmp.rmdir()
    for f, part in splits.items():
        write_text(out / f, "".join(f"{x}\n" for x in part))
    write_text(out / "synth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out
