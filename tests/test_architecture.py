"""The house's import graph: imports flow one way, down the floors of docs/architecture.md, with no circles.

Every ``import`` of a ``vat3d`` module counts, at module level or inside a function (a lazy import
hides a dependency from the reader but not from this test), ``if TYPE_CHECKING:`` blocks included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vat3d

ROOT = Path(vat3d.__file__).parent

#: Floors from the bottom up: a module may import modules of its own floor or of floors below it.
FLOORS: list[tuple[str, ...]] = [
    ("vat3d.schedule", "vat3d.fileio", "vat3d.geometry", "vat3d.renderers"),  # meshes, files, pictures
    ("vat3d.data", "vat3d.models", "vat3d.pretrained"),  # datasets; networks and their weights
    ("vat3d.codec", "vat3d.pipelines"),  # models put to use: token files, generation and reconstruction
    ("vat3d.evaluation",),  # metrics, baselines, reports
    ("vat3d.training", "vat3d.app"),  # Lightning loops; the web app
    ("vat3d.commands",),  # one module per CLI command
    ("vat3d.cli", "vat3d.__main__"),
]
FACE = "vat3d"  # the package's __init__: imports nothing of ours


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    for i, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS and docs/architecture.md")


def imports_of(path: Path, module: str) -> set[str]:
    """The vat3d modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES and name != module}


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: imports_of(path, name) for name, path in MODULES.items()}


def test_every_module_is_on_a_floor():
    for name in MODULES:
        if name != FACE:
            floor_of(name)
    assert not GRAPH[FACE], f"vat3d/__init__.py imports {GRAPH[FACE]}"


def test_no_import_runs_up_a_floor():
    upward = sorted(f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})"
                    for a, targets in GRAPH.items() if a != FACE
                    for b in targets if b != FACE and floor_of(b) > floor_of(a))
    assert not upward, "imports that run up the house:\n" + "\n".join(upward)


def test_no_circles():
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt.endswith("__init__") or nxt == FACE:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from .api import encode_mesh\n\ndef f():\n    from vat3d.models import tokenizer\n")
    assert imports_of(source, "vat3d.codec.x") >= {"vat3d.codec.api", "vat3d.models.tokenizer"}


def test_no_module_is_over_600_lines():
    long = sorted(f"{name}: {n} lines" for name, path in MODULES.items()
                  if (n := len(path.read_text().splitlines())) > 600)
    assert not long, "split these rooms:\n" + "\n".join(long)
