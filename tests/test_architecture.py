"""The house drawn from the imports: no circle, no arrow back up, no long function without a reason.

Layers, bottom to top: ``lida_plugin`` (the runtime: never imports the training package, the host
examples or torch), then ``lida_exporters`` (training, folder ``exporters/``) and ``lida_hooks``
(host integrations, folder ``hooks/``), which may import the runtime.
Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: installed package name -> folder (exporters/ and hooks/ are installed as lida_exporters and lida_hooks)
PACKAGES = {"lida_plugin": "lida_plugin", "lida_exporters": "exporters", "lida_hooks": "hooks"}
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in PACKAGES.items():
        for f in (REPO / folder).rglob("*.py"):
            name = ".".join((pkg, *f.relative_to(REPO / folder).with_suffix("").parts))
            mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules (of this repo, or third-party top-level names) it imports."""
    edges: dict[str, set[str]] = {}
    for mod, f in mods.items():
        pkg = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                base = base if node.level else node.module
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rpartition(".")[0]
                if t != mod:
                    deps.add(t)
        edges[mod] = deps
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles(_imports(_modules())) == []


def test_runtime_imports_nothing_above_it():
    edges = _imports(_modules())
    up = sorted(
        f"{m} -> {d}"
        for m, ds in edges.items()
        if m.startswith("lida_plugin")
        for d in ds
        if d.split(".")[0] in ("lida_exporters", "lida_hooks", "exporters", "hooks", "torch", "torchvision")
    )
    assert up == []


def test_no_long_function_without_a_reason():
    """Over ~60 lines, a function says why in its docstring ("Long because ...")."""
    long = []
    for f in (REPO / "lida_plugin").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
