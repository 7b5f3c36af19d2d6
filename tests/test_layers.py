"""The layers import only what the design allows.

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
