"""The package's shape: data flows one way (no import cycle among the runtime's modules), the
wire package stays sans-IO, and the public names are trionano's."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import trionano
import trionano.wire

PACKAGE = Path(trionano.__file__).resolve().parent


def import_graph() -> dict[str, set[str]]:
    """module -> the trionano modules it imports (module-level, function-level and type-only
    imports alike); package __init__ re-exports are left out."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "_generated" in path.parts or path.name == "__init__.py":
            continue
        modules[".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        base = name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                if not node.level:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    edges.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def test_the_runtime_modules_import_each_other_one_way() -> None:
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*path, module, target])
            if not state.get(target):
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [])


def test_the_wire_package_imports_nothing_of_the_runtime() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("trionano.wire."):
            assert all(target.startswith("trionano.wire.") for target in targets), (module, targets)
    for path in (PACKAGE / "wire").rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        assert not imported & {"trio", "socket", "logging", "asyncio"}, (path, imported)


def test_public_names_are_trionanos_and_documented() -> None:
    exported = [name for name in dir(trionano) if not name.startswith("_")]
    for name in exported:
        value = getattr(trionano, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert not value.__module__.startswith("trionano._"), (name, value.__module__)
            assert inspect.getdoc(value), f"trionano.{name} has no docstring"


def test_nothing_private_is_reached_across_modules() -> None:
    # "no reaching into another module's private members": no `x._name` on objects of other
    # modules' classes; approximated by forbidding `server._`, `session._`, `agent._` outside
    # the module that defines them
    owners = {"server": "_server.py", "session": "_session.py", "agent": "_agent.py", "group": "_group.py"}
    for path in PACKAGE.rglob("*.py"):
        if "_generated" in path.parts:
            continue
        text = path.read_text()
        for name, owner in owners.items():
            if path.name != owner:
                assert f"{name}._" not in text.replace(f"{name}.__", ""), (path.name, name)
