"""The user's documentation stays true: every relative link resolves (file and #heading), and
every documented command exists with the options it is shown with."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "search_spaces" / "README.md",
    REPO / "results" / "README.md",
    REPO / "cluster" / "README.md",
]
COMMANDS = {
    "run",
    "train",
    "evaluate",
    "predict",
    "export",
    "inspect",
    "synth",
    "montage",
    "weights",
    "split",
    "final",
    "report",
    "dashboard",
    "audit",
}
FENCE = re.compile(r"```.*?```", flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """The #anchors of a Markdown file's headings (code blocks excluded)."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(md: Path) -> list[str]:
    """Relative links and images of ``md`` whose file or #heading does not exist."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    bad = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue
        path, _, frag = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            bad.append(f"{target}: no heading #{frag}")
    return bad


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(md: Path) -> None:
    assert not broken_links(md)


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n[x](b.md) [y](#top) [z](#nowhere)\n", encoding="utf-8")
    assert broken_links(tmp_path / "a.md") == [
        "b.md: no such file",
        "#nowhere: no heading #nowhere",
    ]


def documented_commands() -> list[tuple[str, str, tuple[str, ...]]]:
    """(file, command, --options) of every `python -m emseg_search ...` / `emseg-search ...`
    line in the docs and in the comments of configs/ and search_spaces/."""
    files = DOCS + sorted((REPO / "configs").glob("*.yaml"))
    files += sorted((REPO / "search_spaces").glob("*.yaml"))
    found = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        text = re.sub(r"\\\n#?\s*", " ", text)  # continued shell lines, also inside comments
        pattern = r"(?:python -m emseg_search(\.run)?|emseg-search)\s+([^\n`|]*)"
        for m in re.finditer(pattern, text):
            rest = m.group(2).split()
            if m.group(1):
                command = "run"
            elif rest and rest[0] in COMMANDS:
                command = rest.pop(0)
                if command == "weights" and rest and rest[0] in ("fetch", "list"):
                    command += " " + rest.pop(0)
            else:
                continue
            options = tuple(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", " ".join(rest)))
            found.append((str(f.relative_to(REPO)), command, options))
    return found


@functools.cache
def help_text(command: str) -> str | None:
    """`python -m emseg_search COMMAND --help`, or None when the command fails."""
    out = subprocess.run(
        [sys.executable, "-m", "emseg_search", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    return out.stdout if out.returncode == 0 else None


@pytest.mark.slow
def test_documented_commands_exist_with_their_options() -> None:
    commands = documented_commands()
    assert len(commands) > 20  # the README alone shows every command
    bad = []
    for where, command, options in commands:
        text = help_text(command)
        if text is None:
            bad.append(f"{where}: `{command}` is not a command")
            continue
        bad += [f"{where}: `{command}` has no option {o}" for o in options if o not in text]
    assert not bad, "\n".join(sorted(set(bad)))
