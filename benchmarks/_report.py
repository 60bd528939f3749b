"""Shared by the benchmarks: print a measured table and write it to benchmarks/results/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


Table = tuple[str, Sequence[str], Sequence[Sequence]]  # head, columns, rows


def markdown(head: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """``head``, a blank line and a Markdown table of ``rows``."""
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(
    name: str, head: str, columns: Sequence[str], rows: Sequence[Sequence], *more: Table
) -> str:
    """Print ``head`` and a Markdown table of ``rows`` (then each further (head, columns,
    rows) table); write them all to results/<name>.md."""
    text = "\n".join(markdown(*table) for table in ((head, columns, rows), *more))
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text
