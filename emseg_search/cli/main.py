"""`emseg-search <command> ...` = `python -m emseg_search <command> ...`; the search is also
`python -m emseg_search.run` (the mission's entry point)."""

from __future__ import annotations

import importlib
import sys

from emseg_search.cli.common import command

# command -> (module, one-line help); each module has main(argv) -> int
COMMANDS = {
    "run": ("emseg_search.cli.run", "search models over a YAML space (the main job)"),
    "inspect": ("emseg_search.cli.inspect_data", "validate a data set and print its fingerprint"),
    "synth": ("emseg_search.cli.synth", "generate the synthetic EM data set"),
    "montage": ("emseg_search.cli.montage", "picture synthetic micrographs next to real ones"),
    "split": ("emseg_search.cli.split", "write a reproducible (grouped) split file"),
    "train": ("emseg_search.cli.train", "train one configuration with Ray Train"),
    "evaluate": ("emseg_search.cli.evaluate", "score a trained model on labelled images"),
    "predict": ("emseg_search.cli.predict", "segment new micrographs and measure particles"),
    "weights": ("emseg_search.cli.weights", "fetch offline ImageNet encoder weights"),
    "final": (
        "emseg_search.cli.final",
        "retrain each architecture's best configuration (seeds) and score it on held-out data",
    ),
    "report": (
        "emseg_search.cli.report",
        "write an experiment's HTML report: comparisons with intervals, figures",
    ),
    "export": (
        "emseg_search.cli.export",
        "export a model artifact to TorchScript or ONNX, verified",
    ),
    "audit": (
        "emseg_search.cli.audit",
        "check a search's folder: no trial or epoch lost or duplicated, optuna.db agreeing",
    ),
    "dashboard": (
        "emseg_search.cli.dashboard",
        "serve a live web dashboard over the results folder (read-only, offline)",
    ),
}


def _usage() -> str:
    """Help text listing the commands."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return (
        f"usage: emseg-search <command> [options]\n\ncommands:\n{rows}\n\n"
        "`emseg-search <command> --help` shows a command's options."
    )


@command  # the offline environment before the command's module is imported
def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command's main; returns its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"emseg-search: unknown command {name!r}; valid: {', '.join(sorted(COMMANDS))}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
