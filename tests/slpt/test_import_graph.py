"""The import graph reads product above, lab beside (docs/design.md, "Architecture"): ``app`` never imports ``bench``
or ``sim``, and no two modules lean on each other, not even through an import inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "bench", "cohort", "db", "experiments", "models", "sim", "slpt", "storage", "strategies")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code (functions included)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            # the longest project module the name starts with ("from db import claims" names db.claims)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def import_graph() -> nx.DiGraph:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    known = {module_name(p) for p in files}
    graph = nx.DiGraph()
    for path in files:
        graph.add_node(module_name(path))
        for target in imported_modules(path, known):
            # importing a package's submodule runs the package's __init__, which is not a dependency cycle by itself
            if not module_name(path).startswith(target + "."):
                graph.add_edge(module_name(path), target)
    return graph


def test_the_product_never_imports_the_lab():
    graph = import_graph()
    leaks = sorted((a, b) for a, b in graph.edges if a.split(".")[0] == "app" and b.split(".")[0] in ("bench", "sim"))
    assert not leaks
    # and at run time: importing every app module loads neither package
    code = (
        "import importlib, pkgutil, sys, app\n"
        "for m in pkgutil.walk_packages(app.__path__, 'app.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('bench', 'sim'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_package_imports_the_experiments():
    graph = import_graph()
    users = sorted((a, b) for a, b in graph.edges if b.split(".")[0] == "experiments" != a.split(".")[0])
    assert not users


def test_no_import_cycles_between_modules():
    cycles = sorted(sorted(c) for c in nx.simple_cycles(import_graph()))
    assert not cycles, cycles
