"""Data problems, collected and reported together before anything trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: the file (or folder) and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DataError(ValueError):
    """A data set failed validation; ``problems`` lists every file at fault."""

    def __init__(self, root: Path | str, problems: list[Problem]) -> None:
        self.root = Path(root)
        self.problems = list(problems)
        lines = [f"data set {self.root} has {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class FileProblem(ValueError):
    """A single file cannot be used; raised by readers and collected into a DataError."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.problem = Problem(Path(path), message)
        super().__init__(str(self.problem))
