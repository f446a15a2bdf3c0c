"""The code's shape: dependencies point one way, and nothing reaches for private names.

Walks the source of `models/` and `dropzoo/` (imports inside functions
included) and fails on an import cycle, or on a module using another
module's underscore-prefixed name (`from m import _x`, or `m._x`).
"""
import ast
import os

import pytest

from conftest import ROOT

PACKAGES = ("models", "dropzoo")


def _module_files():
    """{dotted module name: path} of every module in PACKAGES."""
    found = {}
    for package in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                stem = name[:-3]
                found[package if stem == "__init__" else f"{package}.{stem}"] = os.path.join(
                    ROOT, package, name)
    return found


MODULES = _module_files()


def _resolve(name):
    """The project module `name` refers to, or None if it is not one of ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def analyse(source, module):
    """(modules imported, [private names used]) by one module's source."""
    tree = ast.parse(source)
    imported, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    imported.add(target)
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        target if alias.asname else _resolve(alias.name.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = _resolve(node.module)
            if not base:
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:  # `from package import module`
                    imported.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    imported.add(base)
                    if alias.name.startswith("_"):
                        private.append(f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in aliases and aliases[node.value.id] != module):
            private.append(f"{node.value.id}.{node.attr}")
    imported.discard(module)
    return imported, private


def import_graph():
    graph, private = {}, {}
    for module, path in MODULES.items():
        with open(path) as f:
            graph[module], private[module] = analyse(f.read(), module)
    return graph, private


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target, stack + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_no_module_uses_another_modules_private_names():
    _, private = import_graph()
    assert {m: uses for m, uses in private.items() if uses} == {}


def test_the_import_graph_has_no_cycle():
    graph, _ = import_graph()
    assert find_cycle(graph) is None


def test_models_does_not_import_dropzoo():
    graph, _ = import_graph()
    assert {m: sorted(t for t in targets if t.startswith("dropzoo"))
            for m, targets in graph.items() if m.startswith("models")
            and any(t.startswith("dropzoo") for t in targets)} == {}


# The checks above must be able to fail: each catches a planted violation.
@pytest.mark.parametrize("source,expected", [
    ("from dropzoo.trainer import _paths\n", ["from dropzoo.trainer import _paths"]),
    ("from dropzoo import trainer\nx = trainer._paths\n", ["trainer._paths"]),
    ("import dropzoo.trainer as t\ndef f():\n    return t._write_json\n", ["t._write_json"]),
    ("from dropzoo import trainer\nx = trainer.train_and_evaluate\n", []),
])
def test_private_name_check_catches_a_planted_use(source, expected):
    assert analyse(source, "dropzoo.sweep")[1] == expected


def test_cycle_check_catches_a_cycle_inside_a_function():
    imported, _ = analyse("def f():\n    from dropzoo import trainer\n", "dropzoo.strategies")
    assert imported == {"dropzoo.trainer"}
    graph, _ = import_graph()
    assert "dropzoo.strategies" in set().union(*(graph["dropzoo.trainer"],))
    planted = {**graph, "dropzoo.strategies": graph["dropzoo.strategies"] | imported}
    cycle = find_cycle(planted)
    assert cycle and cycle[0] == cycle[-1] and "dropzoo.trainer" in cycle
