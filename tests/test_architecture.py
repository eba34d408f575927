"""The layering of the packages: data flows one way, and no module imports itself back.

model <- hw <- sim, model <- energy, model <- train, and only the command-line layer
(``cli``) wires them together: the golden model imports nothing else of the project,
the hardware never imports the simulator, and nothing but ``cli`` imports ``cli``. The
plain-Python parts of ``hw`` (parameters, cycle model, mapping, cost models) do not
import Amaranth, and nothing but ``train`` imports PyTorch (the optional [train] extra).
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "hw", "sim", "energy", "train", "soc", "cli")
NAMESPACE = "ternary_accel"

#: What each package may import of the project (besides itself).
ALLOWED = {
    "model": set(),
    "energy": {"model"},
    "hw": {"model", "energy"},
    "sim": {"model", "hw"},
    "train": {"model"},
    "soc": {"model", "hw"},
    "cli": {"model", "hw", "sim", "energy", "train", "soc"},
}


def _modules():
    """``{module: path}`` of every module of the project, by its installed name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([NAMESPACE, *parts])] = path
    return found


MODULES = _modules()


def _imports(path):
    """The project modules ``path`` imports (anywhere in it, functions included)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if not name.startswith(NAMESPACE + "."):
                continue
            # the longest project module the name starts with
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES:
                targets.add(name)
    return targets


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def _package(module):
    return module.split(".")[1]


def test_no_relative_imports_escape_the_namespace():
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        relative = [node.lineno for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level > 0]
        assert not relative, f"{path}: relative imports at lines {relative}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_its_layer_allows(package):
    wrong = sorted((module, target) for module, targets in GRAPH.items()
                   if _package(module) == package
                   for target in targets
                   if _package(target) != package and _package(target) not in ALLOWED[package])
    assert not wrong, f"{package} imports outside its layer: {wrong}"


def test_import_graph_has_no_cycle():
    # Tarjan's strongly connected components; a component of two or more is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))
    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_sees_the_known_arrows():
    # the checks above are only as good as the graph: it must see real imports
    assert f"{NAMESPACE}.model.quant" in GRAPH[f"{NAMESPACE}.hw.rtl.matmul"]
    assert f"{NAMESPACE}.sim.session" in GRAPH[f"{NAMESPACE}.sim.workloads"]


def _imports_torch(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch"
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "torch":
            return True
    return False


def test_only_train_imports_torch():
    # cli/train.py checks that the extra is there before using it
    users = sorted(module for module, path in MODULES.items()
                   if _package(module) not in ("train",) and _imports_torch(path)
                   and module != f"{NAMESPACE}.cli.train")
    assert not users, f"modules outside train import torch: {users}"
