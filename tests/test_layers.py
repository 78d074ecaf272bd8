"""The package's layers run one way: no import cycle (none at module level, none inside a
function), and the core never reaches the speed-ups of `mnist_compare/accel`."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from conftest import ROOT

PACKAGES = ("mnist_compare", "hydra_plugins/mnist_compare_launch")
CORE = ("mnist_compare.models", "mnist_compare.data", "mnist_compare.run", "mnist_compare.train",
        "mnist_compare.collect")
SPEED_ONLY = ("mnist_compare.accel", "hydra_plugins", "mnist_compare.cli", "mnist_compare.bench")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Compare) and \
        isinstance(test.left, ast.Name) and test.left.id == "__name__"


def imports(path: Path, name: str, known: dict[str, Path], entry: bool) -> set[str]:
    """The project's modules that `name` imports anywhere in its file (functions included);
    `entry=False` leaves out its `if __name__ == "__main__":` block (what runs only as a command)."""
    tree = ast.parse(path.read_text())
    skipped = set() if entry else {id(n) for top in tree.body if _is_main_block(top) for n in ast.walk(top)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph(root: Path, entry: bool = True) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(path, name, known, entry) for name, path in known.items()}


def test_no_import_cycle_anywhere():
    """Every import statement, at the top of a file or inside a function, in the package and its
    Hydra plugins: a cycle among them is a layer that calls back up."""
    edges = graph(ROOT)
    assert len(edges) > 30 and "mnist_compare.run.fit" in edges["mnist_compare.train"]  # the graph is read
    try:
        list(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_the_core_never_reaches_the_speed_ups():
    """What the core imports, directly or through others, is core too: the speed-ups are reached
    only through configuration (conf/train.yaml's callback, the sweeper and launcher), which
    `accel=false` switches off."""
    edges = graph(ROOT, entry=False)
    reached, todo = set(), [m for m in edges if m.startswith(CORE)]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += edges[module]
    assert reached and not [m for m in reached if m.startswith(SPEED_ONLY)], sorted(reached)
