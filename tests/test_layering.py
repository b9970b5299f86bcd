"""The house rules, checked on the source: no import cycles, one-way layers, small modules.

Imports are read from the syntax tree, lazy ones (inside functions) included, so a cycle cannot
hide behind a function-level import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "pipelines", "registry", "advisor")
# store is the ground floor; pipelines (writes runs) and registry (reads them) stand side by side
# on it and never import each other; advisor is on top
LAYER = {"store": 0, "pipelines": 1, "registry": 1, "advisor": 2}
MAX_LINES = 400


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, modules: dict) -> set[str]:
    """The project modules `path` imports anywhere in its body (`from a import b` may name module a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        # a package's own __init__ is imported on the way to any of its modules: not an edge back
        graph[name] = {m for m in imports_of(path, modules) if m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert cycles(graph) == [["a.x", "a.y", "a.z"]]
    assert cycles({"a.x": {"a.y"}, "a.y": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipelines.sweep.runner import run_sweep\n    return run_sweep\n")
    assert imports_of(module, project_modules()) == {"pipelines.sweep.runner"}


def test_no_import_cycles_among_the_projects_modules():
    assert cycles(import_graph()) == []


def test_layers_import_one_way():
    crossings = [f"{a} -> {b}" for a, targets in sorted(import_graph().items()) for b in sorted(targets)
                 if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]
                 or (LAYER[b.split(".")[0]] == LAYER[a.split(".")[0]] and a.split(".")[0] != b.split(".")[0])]
    assert crossings == []


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in project_modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
