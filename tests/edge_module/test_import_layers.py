"""edge_module's import layers, read from the source with ``ast`` (nothing is imported).

- the sub-packages and top-level modules of edge_module import each other without cycles (imports
  inside functions count, ``if TYPE_CHECKING:`` ones do not);
- no module imports another in a cycle at import time (module-level imports);
- ``edge_module.protocol`` sits below scoring/, server/ and transports/: it imports only the runtime contract;
- edge_module imports nothing of packager, fpga or cloud_targets (images carry it alone);
- ``edge_module.numerics`` (the number-format kernels) imports only numpy, the standard library and itself,
  and nothing imports it at import time: the server starts without it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import edge_module

ROOT = Path(edge_module.__file__).resolve().parent
PACKAGE = "edge_module"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module_level_only: bool = False) -> Iterator[str]:
    """Absolute names of the modules ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(nodes: list[ast.stmt] | list[ast.AST]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)
            if module_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            yield from walk(list(ast.iter_child_nodes(node)))

    yield from walk(ast.parse(path.read_text(), str(path)).body)


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _modules() -> set[str]:
    return {_module_name(p) for p in _sources()}


def _layer(module: str) -> str:
    """``edge_module.server.service`` → ``edge_module.server``; ``edge_module.runtime`` stays itself."""
    return ".".join(module.split(".")[:2])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _graph(granularity: str, module_level_only: bool = False) -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for path in _sources():
        source = _module_name(path)
        if source in (PACKAGE, f"{PACKAGE}.__main__"):  # the entry points import the rest
            continue
        for target in _imports(path, module_level_only):
            if target not in known or target == PACKAGE:
                continue
            a, b = (_layer(source), _layer(target)) if granularity == "layer" else (source, target)
            if a != b:
                graph.setdefault(a, set()).add(b)
    return graph


def test_the_sub_packages_import_each_other_without_cycles() -> None:
    graph = _graph("layer")
    assert "edge_module.protocol" in graph and "edge_module.server" in graph  # the walk found them
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle between edge_module's parts: " + " -> ".join(cycle or [])


def test_no_module_imports_another_in_a_cycle_at_import_time() -> None:
    cycle = _find_cycle(_graph("module", module_level_only=True))
    assert cycle is None, "modules import each other at import time: " + " -> ".join(cycle or [])


def test_the_protocol_layer_imports_only_the_runtime_contract() -> None:
    graph = _graph("layer")
    assert graph.get("edge_module.protocol", set()) <= {"edge_module.runtime"}
    for layer in ("edge_module.scoring", "edge_module.server", "edge_module.transports"):
        assert "edge_module.protocol" in graph[layer], layer


def test_the_server_package_init_holds_no_code() -> None:
    tree = ast.parse((ROOT / "server" / "__init__.py").read_text())
    assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body)


def test_edge_module_imports_nothing_of_the_build_side() -> None:
    offending = [
        f"{_module_name(path)} imports {name}"
        for path in _sources()
        for name in _imports(path)
        if name.split(".")[0] in ("packager", "fpga", "cloud_targets")
    ]
    assert offending == []


def test_numerics_imports_only_numpy_the_standard_library_and_itself() -> None:
    sources = sorted((ROOT / "numerics").rglob("*.py"))
    assert len(sources) >= 4
    offending = [
        f"{_module_name(path)} imports {name}"
        for path in sources
        for name in _imports(path)
        if not name.startswith("edge_module.numerics")
        and name.split(".")[0] not in ("numpy", "__future__", *sys.stdlib_module_names)
    ]
    assert offending == []


def test_nothing_imports_numerics_at_import_time() -> None:
    graph = _graph("module", module_level_only=True)
    eager = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        if not source.startswith("edge_module.numerics")
        for target in targets
        if target.startswith("edge_module.numerics")
    )
    assert eager == [], "import edge_module.numerics inside the functions that need it"
    layers = {f"{PACKAGE}.{layer}" for layer in ("server", "runtime", "scoring", "protocol", "transports")}
    modules = sorted(m for m in _modules() if _layer(m) in layers)
    code = "; ".join(
        [*(f"import {m}" for m in modules), "import sys", "print([m for m in sys.modules if 'numerics' in m])"]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    assert result.stdout.strip() == "[]"
