"""The layers import only what the design allows, and no clinseq module imports itself through others.

Data flows io → timeline → data → models → objectives → kernels → train/eval; the import graph below
is the one that flow permits (every import: top level, local and TYPE_CHECKING). The objectives never see
a store or a sampler (they take tensors), the kernels see nothing of clinseq but ``clinseq.errors`` and
``clinseq.utils``, and nothing below ``train`` imports it. ``clinseq.errors`` (the error types) and
``clinseq.utils`` import nothing of clinseq, so every layer may use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "clinseq"

_BASE = {"errors", "utils"}  # import nothing of clinseq; every layer may use them

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "utils": set(),
    "kernels": _BASE,
    "timeline": _BASE,
    "io": {"timeline"} | _BASE,
    "data": {"timeline"} | _BASE,
    "models": _BASE,
    "objectives": {"models", "kernels"} | _BASE,
    "eval": {"data", "models", "timeline"} | _BASE,
    "train": {"io", "timeline", "data", "models", "objectives", "kernels", "eval"} | _BASE,
    "bench": {"io", "timeline", "data", "models", "objectives", "kernels", "eval", "train"} | _BASE,
    "cli": {"io", "timeline", "data", "models", "objectives", "kernels", "eval", "train", "bench"} | _BASE,
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _clinseq_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "clinseq":  # from clinseq import data, models (not __version__)
                names = [f"clinseq.{a.name}" for a in node.names if not a.name.startswith("__")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; clinseq uses absolute imports only")
        found |= {name.split(".")[1] for name in names if name.startswith("clinseq.")}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_allowed_layers(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: layer {layer!r} is not in the table of tests/test_layers.py"
    forbidden = _clinseq_imports(path) - ALLOWED[layer] - {layer}
    assert not forbidden, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(forbidden)}"


def test_every_layer_is_checked() -> None:
    assert {_layer(p) for p in MODULES} == set(ALLOWED)


# -- cycles -----------------------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = ("clinseq", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALL_MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_imports(path: Path) -> set[str]:
    """clinseq modules ``path`` imports when it runs: top level and inside functions, not TYPE_CHECKING.

    ``from clinseq.a import b`` counts as importing ``clinseq.a.b`` when that is a module, else ``clinseq.a``.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            names += [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in ALL_MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found - {_module_name(path)}


def test_no_import_cycles() -> None:
    """No clinseq module reaches itself through its imports (function-level imports included).

    A package's ``__init__`` importing its submodules is no cycle by itself: importing ``clinseq.a.b``
    runs ``clinseq.a`` first, and that edge is not counted; a submodule importing its own package is.
    """
    graph = {name: _runtime_imports(path) for name, path in ALL_MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)
