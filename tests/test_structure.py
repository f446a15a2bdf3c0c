"""The code's shape: dependencies point one way, files stay small, and nothing reaches for private names.

Walks the source of `models/` and `dropzoo/` (imports inside functions
included) and fails on an import cycle, on a module using another module's
underscore-prefixed name (`from m import _x`, or `m._x`), on another
library's private name outside `models/compat.py` (the one module that
isolates workarounds), and on a file over MAX_LINES lines.
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


# ------------------------------------------------------- one job per file

MAX_LINES = 450


def test_no_file_under_models_or_dropzoo_passes_450_lines():
    long = {}
    for module, path in MODULES.items():
        with open(path) as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            long[module] = count
    assert long == {}, f"split these by job (each file one job, at most {MAX_LINES} lines)"


# ---------------------------------------------- other libraries' private names

# The one module allowed to use other libraries' private names (each workaround documented there).
COMPAT = "models.compat"
# Packages whose internals are private although their names have no underscore.
PRIVATE_PACKAGES = ("keras.src", "tensorflow.python", "tensorflow.lite.python", "tensorflow.tsl",
                    "tensorflow.core", "tensorflow_datasets.core.utils")
# Standard-library names that are private in form only: os._exit is the documented way to
# end a process without cleanup (a second Ctrl-C, dropzoo/interrupts.py).
ALLOWED = {"os._exit"}


def _private_component(dotted):
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def library_private_names(source, module):
    """Other libraries' private names `source` uses: private modules, `obj._x`, getattr(obj, "_x")."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and (node.level or _resolve(node.module or "")):
                continue  # the project's own modules: test_no_module_uses_another_modules_private_names
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if isinstance(node, ast.ImportFrom):
                names += [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if _resolve(name):
                    continue
                if _private_component(name) or name.startswith(PRIVATE_PACKAGES):
                    found.append(f"import {name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value.id if isinstance(node.value, ast.Name) else ""
            if base in ("self", "cls"):
                continue
            text = f"{base or ast.unparse(node.value)}.{node.attr}"
            if text not in ALLOWED:
                found.append(text)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            found.append(f"{node.func.id}(..., {node.args[1].value!r})")
    return found


def test_no_other_librarys_private_names_outside_the_compat_module():
    used = {}
    for module, path in MODULES.items():
        if module == COMPAT:
            continue
        with open(path) as f:
            names = library_private_names(f.read(), module)
        if names:
            used[module] = names
    assert used == {}, f"use public APIs, or isolate the workaround in {COMPAT} (with its upstream issue)"


@pytest.mark.parametrize("source,expected", [
    ("from keras.src.models.functional import Functional\n",
     ["import keras.src.models.functional", "import keras.src.models.functional.Functional"]),
    ("import tensorflow.python.ops as o\n", ["import tensorflow.python.ops"]),
    ("def f(model):\n    return model._distribute_strategy\n", ["model._distribute_strategy"]),
    ("def f(model):\n    return getattr(model, '_distribute_strategy', None)\n",
     ["getattr(..., '_distribute_strategy')"]),
    ("import os\nos._exit(1)\n", []),
    ("class A:\n    def f(self):\n        return self._x\n", []),
    ("from models import layers\n", []),
])
def test_private_library_name_check_catches_a_planted_use(source, expected):
    assert library_private_names(source, "dropzoo.x") == expected


# --------------------------------------------- the workarounds still work


def test_fixed_seed_hands_out_its_seed_inside_a_traced_function():
    """models.compat.FixedSeed: keras.random takes it where it takes a SeedGenerator, without state."""
    import keras
    import numpy as np
    import tensorflow as tf

    from models import compat

    @tf.function
    def draw(seed):
        return keras.random.uniform((4,), seed=compat.FixedSeed(tf.stack([seed, tf.constant(3)])))

    first, again, other = draw(tf.constant(1)), draw(tf.constant(1)), draw(tf.constant(2))
    np.testing.assert_array_equal(first, again)  # the same seed pair, the same numbers
    assert not np.array_equal(first, other)
    assert not compat.FixedSeed(tf.constant([1, 2])).__dict__.get("state")  # no state variable
