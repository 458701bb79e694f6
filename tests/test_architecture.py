"""The package's shape stays what docs/architecture.md promises (issue 11): small modules, no
import cycles, every external process started by the one runner, a ruff-clean code base.

These read the source with ``ast`` and never import the package, so a broken module cannot
hide a violation; each failure lists every offending module, not just the first.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nv_datalad"
MAX_LINES = 400
#: The only places allowed to start processes: the git/git-annex runner, the emulator (its
#: command line and worker processes) and the CLI entry points.
PROCESS_OWNERS = ("nv_datalad/dataset/runner.py", "nv_datalad/emulator/", "nv_datalad/cli.py")
#: ``os`` functions that start a program, the same thing as a ``subprocess`` call.
OS_SPAWNERS = ("system", "popen", "spawn", "exec", "posix_spawn", "fork")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(module: str, path: Path, modules: set[str]) -> Iterator[tuple[str, int]]:
    """(package module, line) for each import of ``module``, at any depth: inside functions
    and ``if TYPE_CHECKING:`` blocks too (both are dependencies). Relative imports are
    resolved; ``from P import n`` is an import of module ``P.n`` when there is one (as Python
    resolves it), else of ``P``; ``import a.b.c`` of the deepest package module it names."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                named = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
                deepest = next((m for m in named if m in modules), None)
                if deepest:
                    yield deepest, node.lineno
        elif isinstance(node, ast.ImportFrom):
            prefix = node.module or ""
            if node.level:
                base = module.split(".")
                base = base[:len(base) - (node.level - 1 if is_package else node.level)]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{prefix}.{alias.name}"
                if target in modules:
                    yield target, node.lineno
                elif prefix in modules:
                    yield prefix, node.lineno


def _import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported package module: first line}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        targets: dict[str, int] = {}
        for target, line in sorted(_imports(module, path, set(modules)), key=lambda t: t[1]):
            targets.setdefault(target, line)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component (Tarjan), shortest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, {}):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted((_path_through(graph, c) for c in components), key=len)


def _path_through(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*paths[node], start]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    hops = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*hops, cycle[-1]])


def test_no_module_is_over_400_lines():
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in _modules().values()}
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(
        f"  {name}: {n}" for name, n in over.items())


def test_no_import_cycle_between_modules():
    graph = _import_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + _describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    """The checker itself: a cycle, a self-import and an acyclic chain."""
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"d": 4}, "e": {"a": 5}}
    assert _cycles(graph) == [["d", "d"], ["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_relative_and_function_level_imports_are_edges(tmp_path):
    """The graph sees what Python runs: relative imports resolved, imports inside functions."""
    module = tmp_path / "m.py"
    module.write_text("from . import layout\nfrom .layout import IMAGES_TSV\n"
                      "def f():\n    from ..spec import Spec, model\n"
                      "    import nv_datalad.errors.Nope\n")
    modules = {"nv_datalad.dataset.layout", "nv_datalad.spec", "nv_datalad.spec.model",
               "nv_datalad.errors", "nv_datalad.dataset.m"}
    assert sorted(_imports("nv_datalad.dataset.m", module, modules)) == [
        ("nv_datalad.dataset.layout", 1), ("nv_datalad.dataset.layout", 2),
        ("nv_datalad.errors", 5), ("nv_datalad.spec", 4), ("nv_datalad.spec.model", 4)]


def _process_uses(path: Path) -> Iterator[tuple[int, str]]:
    """(line, what) for each ``subprocess`` import or use and each ``os`` program spawn."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "subprocess":
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "subprocess":
                yield node.lineno, f"from {node.module} import ..."
            elif node.module == "os" and any(a.name.startswith(OS_SPAWNERS) for a in node.names):
                yield node.lineno, "from os import " + ", ".join(a.name for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "subprocess":
                yield node.lineno, f"subprocess.{node.attr}"
            elif node.value.id == "os" and node.attr.startswith(OS_SPAWNERS):
                yield node.lineno, f"os.{node.attr}"


def test_processes_are_started_only_by_the_runner_the_emulator_and_the_cli():
    offenders = []
    for path in _modules().values():
        name = _rel(path)
        if name.startswith(PROCESS_OWNERS):
            continue
        offenders += [f"  {name}:{line}: {what}" for line, what in sorted(set(_process_uses(path)))]
    assert not offenders, (
        "subprocess used outside nv_datalad/dataset/runner.py, the emulator and the CLI "
        "(route git/git-annex calls through the runner):\n" + "\n".join(offenders))


def test_ruff_clean():
    """The linter runs as part of the README's test command, over everything it checks."""
    targets = [d for d in ("nv_datalad", "tests", "benchmarks") if (ROOT / d).is_dir()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *targets],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
