"""The package's import arrows point one way: no module imports itself back through others,
and the lower layers never reach up (the image stage knows no VM, lab, GNS3 or command line)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minivm"
# layer -> the packages above it that it must never import (even inside a function)
NEVER = {
    "minivm.image": ("minivm.vm", "minivm.lab", "minivm.gns3", "minivm.cli"),
    "minivm.hostfacts": ("minivm.image", "minivm.vm", "minivm.lab", "minivm.gns3", "minivm.cli"),
    "minivm.vm": ("minivm.image", "minivm.lab", "minivm.gns3", "minivm.cli"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The minivm modules ``path`` imports, anywhere in it (``from pkg import sub``: sub)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    done: set[str] = set()

    def visit(m: str, trail: list[str]) -> None:
        if m in trail:
            raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(m):], m]))
        if m not in done:
            for n in sorted(graph[m]):
                visit(n, [*trail, m])
            done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_lower_layers_never_import_upper_ones() -> None:
    modules = _modules()
    wrong = [f"{m} imports {n}" for m, p in sorted(modules.items())
             for layer, above in NEVER.items() if m == layer or m.startswith(layer + ".")
             for n in sorted(_imports(p, modules)) if n.startswith(above)]
    assert not wrong, wrong
