"""Inference throughput: Predictor vs a bare torch.inference_mode() loop on the same model, and
the time to score a whole data folder (EMPS) at full resolution.

    python benchmarks/inference_throughput.py [--model DIR] [--emps DIR] [--limit N]
        [--n 8] [--repeats 3] [--threads 2] [--device cpu]

The bare loop gets the same images already normalised, padded (and cut into the same tiles,
for the tiled path) as tensors, so "x bare" is what Predictor's preprocessing, blending and
resizing cost; the "identity model" rows time that cost alone (Predictor around a model that
does nothing), which load elsewhere on the machine cannot hide. Each timing is the best of
``--repeats`` interleaved runs (other load only ever adds time). Without ``--model`` an
untrained UNet(resnet18) artifact is written to a temp folder: as fast as a trained one,
but its IoU is meaningless. Writes benchmarks/results/inference_throughput[_gpu].md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import write_report  # noqa: E402

from emseg_search.config import TrialConfig  # noqa: E402
from emseg_search.data import Micrograph, compute_fingerprint, load_data  # noqa: E402
from emseg_search.inference.artifact import ModelArtifact, load_artifact, write_artifact  # noqa: E402
from emseg_search.inference.predictor import FLIPS, Predictor, tile_origins  # noqa: E402
from emseg_search.metrics import iou, per_image_counts  # noqa: E402
from emseg_search.models.registry import build_model, required_stride  # noqa: E402

EMPS_SHAPE = (512, 683)  # the commonest EMPS size (H, W); its images are 512 x 512..916


def _image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A grey uint8 micrograph-like image: dark blobs on a noisy bright ground."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    img = np.full(shape, 190.0)
    for _ in range(h * w // 4000):
        r, c, rad = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 25)
        img[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = 60
    return np.clip(img + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


def untrained_artifact(folder: Path) -> ModelArtifact:
    """An untrained UNet(resnet18) (TrialConfig defaults) written and loaded as an artifact."""
    cfg = TrialConfig(arch="unet", encoder="resnet18")
    torch.manual_seed(0)
    sample = Micrograph("s", _image((64, 64), 0), np.zeros((64, 64), np.uint16))
    path = write_artifact(
        folder / "model",
        cfg,
        build_model(cfg).state_dict(),
        0.5,
        0.25,
        "untrained (benchmark)",
        compute_fingerprint([sample]),
        required_stride(cfg),
        {},
    )
    return load_artifact(path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best(fns: list[Callable[[], None]], repeats: int, device: torch.device) -> list[float]:
    """Best wall time of each of ``fns`` over ``repeats`` interleaved rounds (after a warm-up
    round), so load from elsewhere on the machine hits them alike."""
    best = [float("inf")] * len(fns)
    for r in range(repeats + 1):
        for i, fn in enumerate(fns):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if r:
                best[i] = min(best[i], time.perf_counter() - t)
    return best


def _inputs(pred: Predictor, images: list[np.ndarray]) -> list[torch.Tensor]:
    """What the bare loop gets: each image normalised, padded, (1, 1, Hp, Wp) on the device."""
    return [pred.prepare(img) for img in images]


def _tiles(pred: Predictor, image: np.ndarray) -> list[torch.Tensor]:
    """The bare loop's tiled input: the Predictor's tiles, batched as it batches them."""
    padded = pred.prepare(image)[0, 0]
    t = pred.tile_size
    ys = tile_origins(padded.shape[0], t, pred.overlap, pred.stride)
    xs = tile_origins(padded.shape[1], t, pred.overlap, pred.stride)
    origins = [(y, x) for y in ys for x in xs]
    return [
        torch.stack([padded[y : y + t, x : x + t] for y, x in origins[i : i + pred.batch_size]])[
            :, None
        ]
        for i in range(0, len(origins), pred.batch_size)
    ]


def _bare(model: torch.nn.Module, batches: list[torch.Tensor], tta: bool) -> Callable[[], None]:
    """A bare inference loop: the model (and, with ``tta``, its flips) over ``batches``."""

    def run() -> None:
        with torch.inference_mode():
            for x in batches:
                for dims in FLIPS if tta else FLIPS[:1]:
                    model(x.flip(dims) if dims else x)

    return run


class _Identity(torch.nn.Module):
    """A 'model' that costs nothing: what is left of Predictor's time is its own overhead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _overhead(
    art: ModelArtifact, images: list[np.ndarray], tile: int, args: argparse.Namespace
) -> float:
    """Best seconds for Predictor with an identity model over ``images``: its own cost."""
    pred = Predictor(
        dataclasses.replace(art, model=_Identity()), tile_size=tile, device=args.device
    )

    def run() -> None:
        for img in images:
            pred.predict_logits(img)

    return _best([run], args.repeats, pred.device)[0]


def _row(name: str, n: int, mp: float, s: float, bare: float | None) -> tuple:
    ratio = f"{bare / s:.2f}" if bare else ""
    return (name, n, f"{mp:.2f}", f"{s:.3f}", f"{n / s:.2f}", f"{s / mp:.4f}", ratio)


def bench_paths(art: ModelArtifact, args: argparse.Namespace, device: torch.device) -> list[tuple]:
    """Predictor vs the bare loop: whole EMPS-sized images, TTA, and a large tiled image."""
    rows = []
    images = [_image(EMPS_SHAPE, i) for i in range(args.n)]
    mp = args.n * EMPS_SHAPE[0] * EMPS_SHAPE[1] / 1e6
    for tta in (False, True):
        pred = Predictor(art, tile_size=1024, tta=tta, device=device)

        def run(pred: Predictor = pred) -> None:
            for img in images:
                pred.predict_logits(img)

        bare_loop = _bare(pred.model, _inputs(pred, images), tta)
        bare, s = _best([bare_loop, run], args.repeats, device)
        label = (
            f"{EMPS_SHAPE[0]}x{EMPS_SHAPE[1]} whole image{' + flip TTA (4 passes)' if tta else ''}"
        )
        rows.append(_row(f"bare loop: {label}", args.n, mp, bare, None))
        rows.append(_row(f"Predictor: {label}", args.n, mp, s, bare))
    own = _overhead(art, images, 1024, args)
    label = f"{EMPS_SHAPE[0]}x{EMPS_SHAPE[1]} whole image"
    rows.append(_row(f"Predictor overhead alone (identity model): {label}", args.n, mp, own, None))
    big = _image((args.large, args.large), 99)
    pred = Predictor(art, tile_size=args.tile, overlap=0.25, batch_size=4, device=device)
    tiles = _tiles(pred, big)
    bare, s = _best(
        [_bare(pred.model, tiles, False), lambda: pred.predict_logits(big)], args.repeats, device
    )
    n_tiles = sum(b.shape[0] for b in tiles)
    label = (
        f"{args.large}x{args.large} tiled ({n_tiles} tiles of {args.tile}, overlap 0.25, batch 4)"
    )
    rows.append(_row(f"bare loop: {label}", 1, args.large**2 / 1e6, bare, None))
    rows.append(_row(f"Predictor: {label}", 1, args.large**2 / 1e6, s, bare))
    own = _overhead(art, [big], args.tile, args)
    rows.append(
        _row(f"Predictor overhead alone (identity model): {label}", 1, big.size / 1e6, own, None)
    )
    return rows


def bench_folder(
    art: ModelArtifact, root: Path, limit: int | None, device: torch.device
) -> list[tuple]:
    """Decode + validate a folder, then predict and score its images at full resolution."""
    t = time.perf_counter()
    loaded = load_data(root).items
    decode = time.perf_counter() - t
    items = loaded[:limit]
    pred = Predictor(art, device=device)
    counts = []
    t = time.perf_counter()
    for m in items:
        mask = pred.predict_mask(m.image)
        counts.append(per_image_counts(torch.from_numpy(mask), torch.from_numpy(m.mask)))
    s = time.perf_counter() - t
    score = float(iou(torch.cat(counts).sum(0)))
    n, mp = len(items), sum(m.image.size for m in items) / 1e6
    all_mp = sum(m.image.size for m in loaded) / 1e6
    rows = [
        (f"{root.name}: decode + validate (load_data)", len(loaded), f"{all_mp:.2f}")
        + (f"{decode:.2f}", f"{len(loaded) / decode:.2f}", f"{decode / all_mp:.3f}", ""),
        _row(f"{root.name}: predict_mask + IoU, full resolution (IoU {score:.3f})", n, mp, s, None),
    ]
    if n == len(loaded):
        rows.append(
            _row(f"{root.name}: all of it (decode + predict + score)", n, mp, decode + s, None)
        )
    return rows


def main() -> None:
    """Run the benchmarks and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="artifact folder (default: untrained UNet)")
    p.add_argument("--emps", type=Path, default=os.environ.get("EMSEG_EMPS_DIR"))
    p.add_argument("--limit", type=int, help="score only the first N images of --emps")
    p.add_argument("--n", type=int, default=8, help="synthetic EMPS-sized images per timing")
    p.add_argument("--large", type=int, default=2048, help="side of the tiled test image")
    p.add_argument("--tile", type=int, default=512, help="tile size of the tiled test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        art = load_artifact(args.model) if args.model else untrained_artifact(Path(tmp))
        cfg = art.config
        model = (
            f"artifact {args.model}" if args.model else "untrained artifact (random init)"
        ) + f": {cfg.arch}({cfg.encoder}, depth {cfg.encoder_depth}), scale {cfg.scale}"
        rows = bench_paths(art, args, device)
        if args.emps and Path(args.emps).is_dir():
            rows += bench_folder(art, Path(args.emps), args.limit, device)
    head = (
        f"{model}; best of {args.repeats}; {platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} torch threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", torch {torch.__version__}; "
        "'x bare' = bare-loop time / Predictor time (1.00 = no overhead)"
    )
    columns = ["measurement", "images", "MP", "s", "images/s", "s/MP", "x bare"]
    name = "inference_throughput" + ("_gpu" if device.type == "cuda" else "")
    write_report(name, head, columns, rows)


if __name__ == "__main__":
    main()
