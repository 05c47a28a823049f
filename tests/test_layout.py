"""The package's layout: small modules, imports only downwards through the layers, no import cycle.

Read from the sources (no module is imported), so the test is instant and sees imports inside functions too.
Layers, lowest first: a module imports only from a lower layer or from its own folder.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "energy_models"
MAX_LINES = 300
# Lowest first. Every folder and top-level module of energy_models/ has a layer.
LAYERS = (
    ("errors",),
    ("files", "sampling", "figures", "whitening", "linalg", "training", "objectives"),
    ("data", "savedmodel"),
    ("gaussian", "dem"),
    ("evaluation",),
    ("energy_estimator",),
    ("experiments",),
)
PACKAGE_ORIGINAL = PACKAGE
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _modules():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path, modules):
    """The energy_models modules that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("energy_models"):
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("energy_models")]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "energy_models":
                found.add(name)
    return found


def _unit(module):
    """The folder or top-level module a module belongs to: `gaussian` for energy_models.gaussian.nce."""
    return module.split(".")[1]


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules() if m != "energy_models"}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"
    assert "experiments" in units and "gaussian" in units and "dem" in units  # the check sees the package


def test_imports_go_only_downwards():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if name == "energy_models":
            continue  # the top level's lazy exports name every layer
        for target in _imports(path, modules):
            if target != "energy_models" and _unit(target) != _unit(name) and RANK[_unit(target)] >= RANK[_unit(name)]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that do not go down a layer: " + ", ".join(sorted(upward))


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name, "energy_models"} for name, path in modules.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The checks above can fail: a layer-1 module importing experiments, and two modules importing each other."""
    package = tmp_path / "energy_models"
    (package / "experiments").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "experiments" / "__init__.py").write_text("")
    (package / "experiments" / "run.py").write_text("from energy_models.files import write\n")
    (package / "files.py").write_text("from energy_models.experiments.run import go\n")
    globals()["PACKAGE"] = package
    try:
        for check in (test_imports_go_only_downwards, test_no_import_cycle):
            try:
                check()
            except AssertionError:
                continue
            raise AssertionError(f"{check.__name__} passed on a broken layout")
    finally:
        globals()["PACKAGE"] = PACKAGE_ORIGINAL
