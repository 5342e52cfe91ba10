"""The layout docs/architecture.md promises and pyproject.toml's import-linter contract enforces: imports at
the top of modules, no import cycle between modules, the layers drawn in the docs are the contract's, every
module is named in the docs, and every module imports on its own. `make test` runs `lint-imports`, which
checks the direction of every import (a subpackage imports only from the layers below it)."""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sceneloc"


def architecture_section() -> str:
    """The ``## ARCHITECTURE`` section of docs/architecture.md (the layers and the module list)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## ARCHITECTURE")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def module_name(path: Path) -> str:
    """``src/sceneloc/pose/fit.py`` -> ``sceneloc.pose.fit`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def sceneloc_imports(path: Path) -> tuple[set[str], list[int]]:
    """The sceneloc modules ``path`` imports at module level (a name imported from a package counts as that
    package), and the lines of any sceneloc import nested in a function or class (it would hide a cycle)."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    top, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if isinstance(node, ast.ImportFrom) and node.level:
                nested.append(node.lineno)   # relative imports are not used: absolute ones say where things live
            continue
        names = [n for n in names if n == "sceneloc" or n.startswith("sceneloc.")]
        if not names:
            continue
        if id(node) in top_level:
            top.update(names)
        else:
            nested.append(node.lineno)
    return top - {"sceneloc"}, nested   # `from sceneloc import __version__`: the package's version string


def import_graph() -> dict[str, set[str]]:
    return {name: sceneloc_imports(path)[0] for name, path in modules().items()}


def contract_layers() -> list[str]:
    """The layers of pyproject.toml's import-linter contract, top to bottom (``a | b``: independent layers)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def test_imports_are_at_the_top_of_modules_and_absolute():
    # __init__ is the one exception: `sceneloc.Map` is imported lazily so `import sceneloc` stays light
    nested = {name: sceneloc_imports(p)[1] for name, p in modules().items() if name != "sceneloc"}
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


def test_every_subpackage_and_module_is_a_layer_and_drawn_in_the_docs():
    layers = contract_layers()
    top = {name.split(".")[1] for name in modules() if name != "sceneloc"}
    assert {f"sceneloc.{t}" for t in top} == set(layers), "a subpackage or top-level module is not a layer"
    section = architecture_section()
    drawn = re.findall(r"^\s*(\w+(?: \| \w+)?)\s+─", section, flags=re.M)
    assert [n.strip() for d in drawn for n in d.split("|")] == [name.removeprefix("sceneloc.") for name in layers], \
        "docs/architecture.md draws other layers than pyproject.toml's import-linter contract"
    files = [str(p.relative_to(PACKAGE)) for name, p in modules().items() if p.name != "__init__.py"]
    unnamed = [f for f in files if f"`{f}`" not in section and f"`{Path(f).name}`" not in section]
    assert not unnamed, f"modules missing from docs/architecture.md: {unnamed}"


def test_the_checks_catch_a_nested_and_a_relative_import(tmp_path):
    (tmp_path / "fit.py").write_text("import numpy\nfrom sceneloc.pose import config\nfrom . import x\n\n"
                                     "def f():\n    from sceneloc.mapping import build\n")
    top, nested = sceneloc_imports(tmp_path / "fit.py")
    assert top == {"sceneloc.pose"} and nested == [3, 6]


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_any_order():
    names = sorted(n for n in modules() if n != "sceneloc" and not n.endswith("__main__"))
    random.Random(0).shuffle(names)
    # third-party libraries stay loaded (they are slow to import); sceneloc is forgotten before each module
    script = (
        "import importlib, sys, numpy, torch, cv2\n"
        f"for name in {names!r}:\n"
        "    for key in [k for k in sys.modules if k == 'sceneloc' or k.startswith('sceneloc.')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
