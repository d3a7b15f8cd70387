"""The package's layout rules, measured on the source with ``ast``.

- no module of ``bopkd/`` or ``benchmarks/`` over 600 lines;
- no function body over 80 lines (its docstring and signature not counted), except numba kernels, which are
  written out on purpose (one loop nest the compiler sees whole);
- imports run down the data flow only: a sub-package never imports one that comes later in
  :data:`LAYERS` (for example ``geometry`` never imports ``data``), at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_BODY_LINES = 80

#: The package's layers, lowest first: a module may import its own layer and the layers before it. ``eval``
#: (the BOP CSV format, its checks and the metrics) comes before ``infer``, which writes that format.
LAYERS = (
    ("errors", "utils", "config", "records"),
    ("geometry",),
    ("data",),
    ("models",),
    ("losses",),
    ("train",),
    ("eval",),
    ("infer",),
    ("report",),
    ("pipeline",),
    ("cli", "__main__", "__init__"),
)


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def _is_numba_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for d in fn.decorator_list:
        node = d.func if isinstance(d, ast.Call) else d
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
        if name in ("njit", "jit", "vectorize", "guvectorize"):
            return True
    return False


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources("bopkd", "benchmarks")
        if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_body_over_80_lines():
    long = {}
    for p in _sources("bopkd", "benchmarks"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or _is_numba_kernel(node):
                continue
            if (n := _body_lines(node)) > MAX_BODY_LINES:
                long[f"{p.relative_to(ROOT)}:{node.name}"] = n
    assert not long, f"function bodies over {MAX_BODY_LINES} lines: {long}"


def _layer(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"bopkd.{name} is in no layer of tests/test_layout.py: add it to LAYERS")


def _imported(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "bopkd" or m.startswith("bopkd.")}


def test_imports_follow_the_data_flow():
    wrong = []
    for p in _sources("bopkd"):
        rel = p.relative_to(ROOT / "bopkd")
        own = _layer(rel.parts[0].removesuffix(".py"))
        for mod in _imported(ast.parse(p.read_text(encoding="utf-8"))):
            parts = mod.split(".")
            if len(parts) < 2:
                continue
            if _layer(parts[1]) > own:
                wrong.append(f"bopkd/{rel} imports {mod}")
    assert not wrong, "imports that run back up the data flow:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("snippet", ["def f():\n" + "    x = 1\n" * 81])
def test_the_body_measure_counts_statements(snippet):
    fn = ast.parse(snippet).body[0]
    assert _body_lines(fn) == 81
