"""The package imports downward only: no module of tinyfw imports, directly or through others,
a module that imports it back, counting imports inside functions too.

The check reads the source with ``ast`` instead of importing it, so it sees every import
statement, also those that only run when a function is called. Imports under
``if TYPE_CHECKING:`` never run and do not count. Importing ``a.b.c`` also runs the package
``a/__init__.py`` and ``a/b/__init__.py`` first; those implicit edges are left out, because a
package ``__init__`` that re-exports its modules would otherwise form a cycle with every one of
them. An import names a module when it names its file: ``from .ops import shape`` points at
``ops/shape.py``, ``from .ops.shape import reshape`` at ``ops/shape.py`` as well, and
``from . import autograd`` at ``autograd.py``.
"""
import ast
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "tinyfw"


def module_files(package_dir):
    """``{dotted module name: path}`` for every ``.py`` file under ``package_dir``."""
    package_dir = pathlib.Path(package_dir)
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _is_type_checking(test):
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _import_nodes(node):
    """Every Import / ImportFrom below ``node`` (in functions too), minus TYPE_CHECKING blocks."""
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children = node.orelse
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _import_nodes(child)


def imported_modules(module, is_package, tree, known):
    """The modules of ``known`` that the source ``tree`` of ``module`` imports."""
    found = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
            continue
        if node.level:
            # ``from .x import y`` is relative to the package holding the module (the module
            # itself when it is a package's __init__); each further dot goes one package up.
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        for alias in node.names:
            if f"{target}.{alias.name}" in known:      # from package import module
                found.add(f"{target}.{alias.name}")
            elif target in known:                      # from module import name
                found.add(target)
    found.discard(module)
    return found


def import_graph(package_dir):
    """``{module: set of modules it imports}`` for the package in ``package_dir``."""
    files = module_files(package_dir)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = imported_modules(module, path.name == "__init__.py", tree, files)
    return graph


def strongly_connected_components(graph):
    """Tarjan's algorithm, iterative: the components of ``graph`` with more than one module."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# ------------------------------------------------------------------------------ the package
def test_tinyfw_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR)
    assert "tinyfw.tensor" in graph and "tinyfw.ops.elementwise" in graph
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles (each line: modules that import each other):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_tensor_and_autograd_sit_below_the_ops_and_nn():
    graph = import_graph(PACKAGE_DIR)
    for core in ("tinyfw.tensor", "tinyfw.autograd"):
        upward = sorted(m for m in reachable(graph, core)
                        if m.startswith(("tinyfw.ops", "tinyfw.nn", "tinyfw.tensor_methods")))
        assert not upward, f"{core} imports {upward}"


def test_tensor_methods_are_bound_once_the_package_is_imported():
    import tinyfw as fw
    t = fw.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = ((t * 2 + 1) @ t).sum()
    y.backward()
    assert t.grad.tolist() == pytest.approx([5.0, 9.0, 13.0])   # d/dt (2 t.t + sum t) = 4t + 1
    assert {t: 1}[t] == 1     # __eq__ is elementwise, hashing stays by identity


# ------------------------------------------------------------------------------ the checker
def _write_package(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    pkg = _write_package(tmp_path, {
        "pkg/__init__.py": "from . import low, high\n",
        "pkg/low.py": "def f():\n    from .sub.high import g\n    return g\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/high.py": "from .. import low\n\ndef g():\n    return low\n",
        "pkg/other.py": "import pkg.low\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.low"] == {"pkg.sub.high"}
    assert graph["pkg.sub.high"] == {"pkg.low"}
    assert graph["pkg.other"] == {"pkg.low"}
    assert strongly_connected_components(graph) == [["pkg.low", "pkg.sub.high"]]


def test_checker_ignores_type_checking_imports_and_package_faces(tmp_path):
    pkg = _write_package(tmp_path, {
        "pkg/__init__.py": "from .a import A\nfrom .b import B\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from .b import B\nA = 1\n",
        "pkg/b.py": "from .a import A\nB = A\n",
    })
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.a", "pkg.b"}, "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert strongly_connected_components(graph) == []
