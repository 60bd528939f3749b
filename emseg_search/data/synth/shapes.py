"""Particle geometry for the procedural EM generator: layouts, shapes and per-box rasterisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FAMILIES: tuple[str, ...] = ("sphere", "ellipse", "cube", "polygon", "rod", "mixed")
_FAMILY_P = (0.36, 0.07, 0.18, 0.15, 0.15, 0.09)
ARRANGEMENTS: tuple[str, ...] = ("lattice", "random", "clusters", "few")
_ARRANGEMENT_P = (0.22, 0.30, 0.28, 0.20)
# Per-image cap: a dense lattice of tiny particles would otherwise dominate the render time.
MAX_PARTICLES = 700


@dataclass(frozen=True)
class Particle:
    """One particle: centre, rotation, shape parameters and a contrast factor."""

    kind: str  # "ellipse" | "rod" | "poly"
    cx: float
    cy: float
    angle: float
    a: float  # ellipse semi-axis / rod half-length of the straight part / poly mean support
    b: float  # ellipse semi-axis / rod radius
    normals: np.ndarray | None  # (K, 2) poly facet normals in the particle frame
    supports: np.ndarray | None  # (K,) poly facet distances, px
    power: float  # poly corner rounding (p-norm); larger is sharper
    rough: np.ndarray | None  # (M, 3) harmonic order, amplitude, phase of the outline
    bound: float  # radius of a disc containing the particle, px
    weight: float  # relative mass-thickness / yield
    rounded: bool  # sphere-like height profile, otherwise flat top with bevelled rim
    bevel: float  # px, rim width of flat-topped particles


@dataclass(frozen=True)
class Footprint:
    """A rasterised particle restricted to its bounding box in the frame."""

    sl: tuple[slice, slice]
    alpha: np.ndarray  # (h, w) float32 anti-aliased coverage
    mask: np.ndarray  # (h, w) bool, the instance-mask pixels
    height: np.ndarray  # (h, w) float32 in [0, 1]: normalised thickness / surface height
    scale: float  # px per unit of the outline gauge, converts height to px


def _lerp_rows(grid: np.ndarray, n_out: int, cell: float) -> np.ndarray:
    """Linearly resample the rows of `grid` (pitch `cell` px) to `n_out` rows."""
    pos = np.arange(n_out, dtype=np.float32) / np.float32(cell)
    i0 = np.minimum(pos.astype(np.int64), grid.shape[0] - 2)
    frac = (pos - i0)[:, None]
    return grid[i0] * (1.0 - frac) + grid[i0 + 1] * frac


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean unit-std noise with correlation length ~`cell` px, shape (h, w) float32."""
    cell = max(float(cell), 1.0)
    gh, gw = int(math.ceil(h / cell)) + 3, int(math.ceil(w / cell)) + 3
    coarse = ndimage.gaussian_filter(rng.standard_normal((gh, gw), dtype=np.float32), 0.8)
    # Bilinear upsampling of a coarse grid is far cheaper than a wide Gaussian at full size;
    # elementwise (no BLAS) so the result cannot depend on the thread count.
    fine = _lerp_rows(_lerp_rows(coarse, h, cell).T, w, cell).T
    fine = fine - fine.mean()
    return (fine / (fine.std() + 1e-6)).astype(np.float32)


def grain(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Fine isotropic grain: white noise blurred by `sigma` px, unit std, (h, w) float32."""
    g = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), sigma)
    return g / (g.std() + 1e-6)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A float drawn log-uniformly from [lo, hi]."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo * 1.001)))))


def _make_particle(
    rng: np.random.Generator, kind: str, cx: float, cy: float, d: float, angle: float, style: dict
) -> Particle:
    """Shape one particle of family `kind` with equivalent diameter `d` px."""
    weight = float(math.exp(rng.normal(0.0, style["weight_sd"])))
    rough = None
    if style["rough"] > 0:
        orders = np.arange(2, 7, dtype=np.float32)
        amps = style["rough"] * rng.uniform(0.2, 1.0, 5) / orders
        rough = np.stack([orders, amps, rng.uniform(0, 2 * np.pi, 5)], 1).astype(np.float32)
    common = dict(cx=cx, cy=cy, angle=angle, rough=rough, weight=weight)
    if kind in ("sphere", "ellipse"):
        e = rng.uniform(1.0, 1.08) if kind == "sphere" else rng.uniform(1.15, 1.8)
        a, b = d / 2 * math.sqrt(e), d / 2 / math.sqrt(e)
        return Particle(
            kind="ellipse", a=a, b=b, normals=None, supports=None, power=0.0,
            bound=a * 1.15, rounded=True, bevel=0.0, **common,
        )  # fmt: skip
    if kind == "rod":
        aspect = style["aspect"] * rng.uniform(0.8, 1.25)
        b = d / 2 / math.sqrt(aspect)
        half = max(d / 2 * math.sqrt(aspect) - b, 0.0)
        return Particle(
            kind="rod", a=half, b=b, normals=None, supports=None, power=0.0,
            bound=(half + b) * 1.15, rounded=True, bevel=0.0, **common,
        )  # fmt: skip
    if kind == "cube":
        ang = np.arange(4) * (np.pi / 2)
        sup = np.full(4, d / 2) * rng.uniform(0.95, 1.05, 4)
        if style["truncate"] > 0:
            ang = np.concatenate([ang, ang + np.pi / 4])
            sup = np.concatenate([sup, np.full(4, d / 2 * math.sqrt(2) * style["truncate"])])
        power = style["corner_p"]
    else:
        k = int(rng.integers(5, 10))
        ang = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * (2 * np.pi / k)
        sup = d / 2 * rng.uniform(0.78, 1.0, k)
        power = style["corner_p"] * 2.0
    normals = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    wrapped = np.sort(ang % (2 * np.pi))
    gaps = np.diff(np.concatenate([wrapped, wrapped[:1] + 2 * np.pi]))
    bound = float(sup.max() / math.cos(min(float(gaps.max()), 2.6) / 2))
    return Particle(
        kind="poly", a=float(sup.mean()), b=float(sup.mean()), normals=normals,
        supports=sup.astype(np.float32), power=power, bound=bound, rounded=False,
        bevel=max(1.2, d * style["bevel"]), **common,
    )  # fmt: skip


def rasterize(p: Particle, h: int, w: int) -> Footprint | None:
    """Rasterise particle `p` into its bounding box in an (h, w) frame; None if off-frame."""
    r_box = p.bound + 2.0
    x0, x1 = max(int(p.cx - r_box), 0), min(int(p.cx + r_box) + 2, w)
    y0, y1 = max(int(p.cy - r_box), 0), min(int(p.cy + r_box) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return None
    xs = np.arange(x0, x1, dtype=np.float32) - np.float32(p.cx)
    ys = (np.arange(y0, y1, dtype=np.float32) - np.float32(p.cy))[:, None]
    c, s = np.float32(math.cos(p.angle)), np.float32(math.sin(p.angle))
    u, v = xs * c + ys * s, ys * c - xs * s
    if p.kind == "ellipse":
        r = np.sqrt((u / p.a) ** 2 + (v / p.b) ** 2)
        scale = math.sqrt(p.a * p.b)
    elif p.kind == "rod":
        du = np.maximum(np.abs(u) - p.a, 0.0)
        r = np.sqrt(du * du + v * v) / p.b
        scale = p.b
    else:
        g = (u[..., None] * p.normals[:, 0] + v[..., None] * p.normals[:, 1]) / p.supports
        # The p-norm over positive facet gauges rounds the corners of the polygon.
        r = (np.maximum(g, 0.0) ** p.power).sum(-1) ** (1.0 / p.power)
        scale = p.a
    if p.rough is not None:
        theta = np.arctan2(v, u)[..., None]
        r = r / (1.0 + (p.rough[:, 1] * np.cos(p.rough[:, 0] * theta + p.rough[:, 2])).sum(-1))
    alpha = np.clip((1.0 - r) * scale + 0.5, 0.0, 1.0).astype(np.float32)
    if p.rounded:
        height = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    else:
        height = np.sqrt(np.clip((1.0 - r) * (scale / p.bevel), 0.0, 1.0))
    sl = (slice(y0, y1), slice(x0, x1))
    return Footprint(sl, alpha, r < 1.0, height.astype(np.float32), scale)


def _lattice(
    rng: np.random.Generator, h: int, w: int, d: float, kind: str, aspect: float
) -> tuple[np.ndarray, float]:
    """Lattice sites covering the frame, plus the lattice angle."""
    gap = rng.uniform(-0.04, 0.22) if rng.random() < 0.8 else rng.uniform(0.25, 0.6)
    theta = rng.uniform(0, np.pi)
    if kind == "rod":
        length, width = d * math.sqrt(aspect), d / math.sqrt(aspect)
        a1 = np.array([length + gap * width, 0.0])
        a2 = np.array([rng.uniform(0, 0.5) * length, width * (1 + gap)])
    elif kind == "cube" and rng.random() < 0.8:
        a1, a2 = np.array([d * (1 + gap), 0.0]), np.array([0.0, d * (1 + gap)])
    else:
        sp = d * (1 + gap)
        a1, a2 = np.array([sp, 0.0]), np.array([sp / 2, sp * math.sqrt(3) / 2])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    basis = np.stack([rot @ a1, rot @ a2])  # rows are the lattice vectors
    origin = np.array([w / 2, h / 2]) + rng.uniform(-0.5, 0.5, 2) @ basis
    # Lattice coefficients of the (padded) frame corners bound the index range exactly.
    corners = np.array([[-d, -d], [w + d, -d], [-d, h + d], [w + d, h + d]]) - origin
    coef = corners @ np.linalg.inv(basis)
    lo, hi = np.floor(coef.min(0)).astype(int), np.ceil(coef.max(0)).astype(int)
    ij = np.stack(np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1)), -1)
    pts = origin + ij.reshape(-1, 2) @ basis
    pts += rng.normal(0, rng.uniform(0.0, 0.04) * d, pts.shape)
    keep = (pts[:, 0] > -d) & (pts[:, 0] < w + d) & (pts[:, 1] > -d) & (pts[:, 1] < h + d)
    keep &= rng.random(len(pts)) >= rng.uniform(0.0, 0.08)  # vacancies
    if rng.random() < 0.3:  # a monolayer domain edge crossing the frame
        phi = rng.uniform(0, 2 * np.pi)
        off = (pts - np.array([w / 2, h / 2])) @ np.array([math.cos(phi), math.sin(phi)])
        keep &= off < rng.uniform(-0.2, 0.4) * min(h, w)
    pts = pts[keep]
    return pts[rng.permutation(len(pts))], theta


def _scatter(
    rng: np.random.Generator, h: int, w: int, radii: np.ndarray, sep: float, clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Place discs of `radii` at random or, with clusters > 0, grown as agglomerates.

    Returns the (N, 2) centres of the discs that found room and their indices into `radii`.
    """
    n, tries = len(radii), 24
    pts, rs = np.empty((n, 2)), np.empty(n)
    placed: list[int] = []
    seeds = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (max(clusters, 1), 2))
    for i, r in enumerate(radii):
        k = len(placed)
        if i < clusters:
            cand = seeds[i : i + 1]
        elif clusters == 0:
            cand = rng.uniform([-r / 2, -r / 2], [w + r / 2, h + r / 2], (tries, 2))
        else:  # stick to a random earlier particle, touching or slightly sintered into it
            j = rng.integers(0, k, tries)
            phi = rng.uniform(0, 2 * np.pi, tries)
            dist = (rs[j] + r) * rng.uniform(sep, max(sep, 1.0) + 0.03, tries)
            cand = pts[j] + dist[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)
        if k:
            dd = np.hypot(cand[:, None, 0] - pts[:k, 0], cand[:, None, 1] - pts[:k, 1])
            ok = ~np.any(dd < (rs[:k] + r) * sep - 0.5, axis=1)
            if not ok.any():
                continue
            cand = cand[int(np.argmax(ok)) :]
        pts[k], rs[k] = cand[0], r
        placed.append(i)
    k = len(placed)
    return pts[:k], np.asarray(placed, dtype=int)


def sample_particles(rng: np.random.Generator, h: int, w: int) -> list[Particle]:
    """Draw one image's particle layout, back (first) to front (last)."""
    s = min(h, w)
    family = str(rng.choice(FAMILIES, p=_FAMILY_P))
    arrangement = str(rng.choice(ARRANGEMENTS, p=_ARRANGEMENT_P))
    kinds = [family] if family != "mixed" else list(rng.choice(FAMILIES[:5], 2, replace=False))
    dmin = max(5.0, s / 32)
    style = {
        "weight_sd": rng.uniform(0.03, 0.2),
        "rough": rng.uniform(0.02, 0.12) if rng.random() < 0.5 else 0.0,
        "aspect": rng.uniform(2.0, 6.0),
        "truncate": rng.uniform(0.8, 0.95) if rng.random() < 0.3 else 0.0,
        "corner_p": rng.uniform(4.0, 14.0),
        "bevel": rng.uniform(0.03, 0.15),
    }
    size_sd = rng.uniform(0.03, 0.35)
    if arrangement == "lattice":
        kinds = kinds[:1]  # a superlattice assembles from one shape
        d = loguniform(rng, max(dmin, s / 20), s / 4)
        pts, theta = _lattice(rng, h, w, d, kinds[0], style["aspect"])
        size_sd = min(size_sd, rng.uniform(0.02, 0.08))
        diam = d * np.exp(rng.normal(0, size_sd, len(pts)))
        if kinds[0] in ("cube", "rod"):  # facets / long axes follow the lattice
            angles = theta + rng.normal(0, 0.05, len(pts))
        else:
            angles = rng.uniform(0, 2 * np.pi, len(pts))
    else:
        if arrangement == "few":
            d, n = loguniform(rng, s / 8, s / 2.5), int(rng.integers(1, 7))
        else:
            d = loguniform(rng, dmin if arrangement == "random" else max(dmin, s / 30), s / 5)
            n = int(rng.uniform(0.03, 0.45) * h * w / (math.pi * d * d / 4))
            if arrangement == "clusters":
                n = min(n, int(rng.integers(12, 200)))
            n = max(1, min(n, MAX_PARTICLES))
        diam = d * np.exp(rng.normal(0, size_sd, n))
        long = style["aspect"] ** 0.5 * 0.6 if "rod" in kinds else 1.0
        sep = rng.uniform(0.95, 1.05) if rng.random() < 0.6 else rng.uniform(0.6, 0.95)
        clusters = int(rng.integers(1, 5)) if arrangement == "clusters" else 0
        pts, placed = _scatter(rng, h, w, diam / 2 * long, sep, clusters)
        diam = diam[placed]
        angles = rng.uniform(0, 2 * np.pi, len(pts))
    pts, diam, angles = pts[:MAX_PARTICLES], diam[:MAX_PARTICLES], angles[:MAX_PARTICLES]
    pick = rng.integers(0, len(kinds), len(pts))
    return [
        _make_particle(rng, kinds[k], float(x), float(y), float(dd), float(a), style)
        for (x, y), dd, a, k in zip(pts, diam, angles, pick, strict=True)
    ]


def sample_dense_small(
    rng: np.random.Generator, h: int, w: int, diameter: tuple[float, float], coverage: float
) -> list[Particle]:
    """A dense field of small, near-round particles (supported catalysts, in-situ sintering):
    equivalent diameters log-uniform in ``diameter`` px, ``coverage`` of the frame covered."""
    d = loguniform(rng, *diameter)
    n = max(1, min(int(coverage * h * w / (math.pi * d * d / 4)), MAX_PARTICLES))
    diam = d * np.exp(rng.normal(0, rng.uniform(0.1, 0.3), n))
    style = {
        "weight_sd": rng.uniform(0.05, 0.2),
        "rough": rng.uniform(0.02, 0.1),
        "aspect": 2.0,
        "truncate": 0.0,
        "corner_p": rng.uniform(4.0, 8.0),
        "bevel": 0.1,
    }
    pts, placed = _scatter(rng, h, w, diam / 2, rng.uniform(0.9, 1.05), 0)
    diam = diam[placed]
    kinds = rng.choice(("sphere", "polygon"), len(pts), p=(0.7, 0.3))
    angles = rng.uniform(0, 2 * np.pi, len(pts))
    return [
        _make_particle(rng, str(k), float(x), float(y), float(dd), float(a), style)
        for (x, y), dd, a, k in zip(pts, diam, angles, kinds, strict=True)
    ]
