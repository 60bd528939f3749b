"""The shape of the package: dependencies point one way, no import cycles, no import side effects.

Every `import` / `from ... import` of emseg_search inside the package is read with ast (module
level, inside functions and under TYPE_CHECKING alike), so a lazy import cannot hide an edge.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emseg_search"

# Layers, lowest first: a module may import its own sub-package and lower layers only. Same
# layer, other package: not allowed either (peers stay independent).
LAYERS: dict[str, int] = {
    "atomic": -1,  # below config: TrialConfig.write_yaml writes atomically
    "config": 0,
    "data": 1,
    "losses": 1,
    "augment": 1,
    "metrics": 1,
    "models": 1,
    "results": 1,
    "particles": 2,  # measures into results' schemas
    "space": 2,  # checks names against models, losses, augment
    "inference": 3,
    "train": 4,  # writes the model artifact (inference.artifact)
    "search": 5,
    "analysis": 6,
    "dashboard": 6,
    "cli": 7,
    "run": 8,  # `python -m emseg_search.run`
    "__main__": 8,  # `python -m emseg_search <command>`
    "final": 8,  # `python -m emseg_search.final`
    "report": 8,  # `python -m emseg_search.report`
}
# What each of these must never import, whatever the layers say (STYLE.md).
NEVER = {
    "inference": ("train", "search"),
    "analysis": ("train", "search"),
    "dashboard": ("train", "search"),
}


def module_name(path: Path) -> str:
    """emseg_search.a.b for emseg_search/a/b.py (and emseg_search.a for a/__init__.py)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every emseg_search module that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("emseg_search")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute emseg_search imports")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emseg_search"):
            found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the emseg_search modules it imports (resolved to existing modules)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = set()
        for target in imports_of(path):
            # `from emseg_search.models import pretrained` names a module of a package
            while target not in files and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def top(module: str) -> str:
    """The top-level part of a module: emseg_search.train.worker -> train."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_top_level_part_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    names = {n for n in names if not n.startswith(("_", ".")) or n == "__main__"}
    names.discard("__pycache__")
    assert names <= set(LAYERS), f"give these a layer in LAYERS: {sorted(names - set(LAYERS))}"


def test_dependencies_point_one_way() -> None:
    bad = []
    for module, targets in graph().items():
        src = top(module)
        for target in targets:
            dst = top(target)
            if dst == src or target == "emseg_search":
                continue
            if LAYERS[dst] >= LAYERS[src] or dst in NEVER.get(src, ()):
                bad.append(f"{module} -> {target} ({src} layer {LAYERS[src]}, {dst} {LAYERS[dst]})")
    assert not bad, "imports against the direction:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == "emseg_search":
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from emseg_search.search import x\n"
        "def f():\n    import emseg_search.train.worker\n",
        encoding="utf-8",
    )
    assert imports_of(src) == {"emseg_search.search", "emseg_search.train.worker"}


def third_party_imports(path: Path) -> set[str]:
    """The modules other than emseg_search that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {m for m in found if not m.startswith(("emseg_search", "__future__"))}


def library_files() -> list[Path]:
    """The package's modules other than the command-line entry points."""
    return sorted(
        p for p in PACKAGE.rglob("*.py") if top(module_name(p)) not in ("cli", "run", "__main__")
    )


# Third-party packages a part of the package must never import (STYLE.md: analysis and the
# dashboard read results, never Ray).
NEVER_THIRD_PARTY = {"analysis": ("ray",), "dashboard": ("ray",)}


def test_readers_of_results_never_import_ray() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        banned = NEVER_THIRD_PARTY.get(top(module_name(path)), ())
        for module in third_party_imports(path):
            if module.split(".")[0] in banned:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not bad, "\n".join(sorted(bad))


SIDE_EFFECTS = (
    "os.environ[",
    "os.environ.setdefault",
    "os.environ.update",
    "os.putenv",
    "matplotlib.use",
    "logging.basicConfig",
    "ray.init",
)


def test_library_modules_do_not_touch_the_environment_at_import() -> None:
    """No module-level os.environ write, matplotlib.use, logging.basicConfig or ray.init:
    those belong to the command-line entry points (cli/), which decide for the process."""
    bad = []
    for path in library_files():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            text = ast.unparse(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for needle in SIDE_EFFECTS:
                if needle in text:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {needle}")
    assert not bad, "side effects at import:\n" + "\n".join(bad)


@pytest.mark.slow
def test_importing_every_library_module_has_no_side_effects() -> None:
    """Importing the package changes no environment variable, chooses no matplotlib backend
    and adds no logging handler beyond what its third-party imports do by themselves (Ray
    workers import it; so does a user's notebook)."""
    library = sorted(module_name(p) for p in library_files())
    others = sorted(set().union(*(third_party_imports(p) for p in library_files())))
    code = (
        "import importlib, json, logging, os, sys\n"
        f"for m in {others!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError:\n"
        "        pass\n"
        "env = dict(os.environ)\n"
        "handlers = list(logging.getLogger().handlers)\n"
        "mpl = sys.modules.get('matplotlib')\n"
        "before = mpl.rcParams._get_backend_or_none() if mpl else None\n"
        f"for m in {library!r}:\n"
        "    importlib.import_module(m)\n"
        "keys = set(env) | set(os.environ)\n"
        "changed = sorted(k for k in keys if env.get(k) != os.environ.get(k))\n"
        "mpl = sys.modules.get('matplotlib')\n"
        "after = mpl.rcParams._get_backend_or_none() if mpl else None\n"
        "print(json.dumps({'env': changed, 'backend': [before, after],"
        " 'handlers': len(logging.getLogger().handlers) - len(handlers)}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "NO_ALBUMENTATIONS_UPDATE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PACKAGE.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"env": [], "backend": [None, None], "handlers": 0}, seen
