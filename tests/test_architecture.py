"""The layout docs/architecture.md promises: imports at the top of modules, one
direction (no cycle, left to right along the drawn chain), every module named there, and every
module importable on its own."""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sceneloc"


def architecture_section() -> str:
    """The ``## ARCHITECTURE`` section of docs/architecture.md (the chain picture and the helper list)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## ARCHITECTURE")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def drawn_chain() -> list[str]:
    """The modules of the chain line ``geometry ─► data ─► ... ─► cli``, left to right."""
    line = next(ln for ln in architecture_section().splitlines() if ln.startswith("geometry ─►"))
    return [name.strip() for name in line.split("─►")]


def relative_imports(path: Path) -> tuple[set[str], list[int]]:
    """Sibling modules ``path`` imports at module level, and the lines of any import nested in a
    function or class (which would hide an import cycle)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        if id(node) in top_level:
            top.update(n for n in names if n != "__version__")  # the package's own version string
        else:
            nested.append(node.lineno)
    return top, nested


def import_graph() -> dict[str, set[str]]:
    return {p.stem: relative_imports(p)[0] for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def test_imports_are_at_the_top_of_modules():
    # __init__ is the one exception: `sceneloc.Map` is imported lazily so `import sceneloc` stays light
    nested = {p.name: relative_imports(p)[1] for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert not {name: lines for name, lines in nested.items() if lines}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports) as a path, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for dep in sorted(graph.get(module, ())):
            cycle = visit(dep, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    return next((c for c in (visit(m, []) for m in sorted(graph)) if c), None)


def test_import_graph_has_no_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert find_cycle(import_graph()) is None


def test_chain_imports_only_leftwards_and_every_module_is_named():
    chain = drawn_chain()
    graph = import_graph()
    assert set(chain) <= set(graph), set(chain) - set(graph)
    position = {name: i for i, name in enumerate(chain)}
    wrong = [(a, b) for a, deps in graph.items() for b in deps
             if a in position and b in position and position[b] >= position[a]]
    assert not wrong, f"chain modules importing rightwards (against docs/architecture.md): {wrong}"
    section = architecture_section()
    unnamed = [m for m in graph if m not in position and not re.search(rf"`{m}\.py`", section)]
    assert not unnamed, f"modules missing from docs/architecture.md: {unnamed}"


def test_the_checks_catch_a_rightward_import(tmp_path):
    # the graph reader sees a module-level import and a nested one
    (tmp_path / "geometry.py").write_text("from .pose import PoseConfig\n\ndef f():\n    from .data import x\n")
    top, nested = relative_imports(tmp_path / "geometry.py")
    assert top == {"pose"} and nested == [4]


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_any_order():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    random.Random(0).shuffle(modules)
    # third-party libraries stay loaded (they are slow to import); sceneloc is forgotten before each module
    script = (
        "import importlib, sys, numpy, torch, cv2\n"
        f"for name in {modules!r}:\n"
        "    for key in [k for k in sys.modules if k == 'sceneloc' or k.startswith('sceneloc.')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module('sceneloc.' + name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
