"""Shared by the benchmarks: print a measured table and write it to benchmarks/results/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_report(name: str, head: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Print ``head`` and a Markdown table of ``rows``; write both to results/<name>.md."""
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text
