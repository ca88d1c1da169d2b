"""The import graph of src/, read with ast (every import, at module level or inside a
function): no module imports one of a higher layer, and no modules import each other in a
circle. Every package must be given a layer here, so a new one is placed on purpose."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("lora_ablate.errors", "lora_ablate.files", "lora_ablate.target_sets"),
    ("lora_ablate.config", "lora_ablate.cache"),  # the typed schema; the download and folder cache
    # The run record and its typed sections, the labels of a cell, run identity.
    ("lora_ablate.records", "lora_ablate.record_fields", "lora_ablate.record_plan",
     "lora_ablate.record_analysis", "lora_ablate.record_origin", "lora_ablate.labels", "lora_ablate.convergence",
     "lora_ablate.identity"),
    ("lora_ablate.model", "lora_ablate.data", "lora_ablate.plan"),
    ("lora_ablate.run", "lora_ablate.analysis"),
    # The root package (itself only, not its subpackages) re-exports report functions.
    ("lora_ablate.report", "lora_ablate"),
    # The Hydra glue; lora_ablate.cli and __main__ only forward to app.cli.
    ("lora_ablate.app", "lora_ablate.cli", "lora_ablate.__main__", "hydra_plugins"),
]

# Imports that break the rule today, each with the finding that removes it.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CIRCLES: list[set[str]] = []


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file below src (a package is its __init__)."""
    modules = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the project's modules it imports. `from package import name` counts as an
    import of package.name when that is a module (else of the package)."""
    modules = module_files(src)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = package[: len(package) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.add(child if child in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(module: str) -> int:
    """The layer of the longest listed package that holds `module` (the root package
    "lora_ablate" holds nothing but itself)."""
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "lora_ablate" and module.startswith(prefix + "."))
            if inside and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} has no layer: add its package to LAYERS in {Path(__file__).name}")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} imports {t} (layer {layer_of(m)} -> {layer_of(t)})"
           for m, t in upward_imports(import_graph(SRC)) if (m, t) not in KNOWN_UPWARD]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_modules_import_each_other_in_a_circle():
    bad = [sorted(group) for group in circles(import_graph(SRC)) if group not in KNOWN_CIRCLES]
    assert not bad, f"import circles: {bad}"


def test_known_exceptions_are_still_there():
    """An exception that no longer occurs is taken off the list, so it cannot hide a new one."""
    graph = import_graph(SRC)
    assert KNOWN_UPWARD <= set(upward_imports(graph))
    assert all(group in circles(graph) for group in KNOWN_CIRCLES)


def test_the_glue_is_above_run_and_report():
    assert layer_of("lora_ablate.app.sweeper") > layer_of("lora_ablate.report.render") > layer_of("lora_ablate.run.runner")
    assert layer_of("lora_ablate.config.schema") < layer_of("lora_ablate.records")


def _write(src: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = src / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_finds_upward_lazy_relative_and_circular_imports(tmp_path):
    _write(tmp_path, {
        "lora_ablate/__init__.py": "",
        "lora_ablate/config/__init__.py": "",
        "lora_ablate/config/schema.py": "def f():\n    from lora_ablate.run import loop\n",
        "lora_ablate/run/__init__.py": "",
        "lora_ablate/run/loop.py": "from . import runner\n",
        "lora_ablate/run/runner.py": "import lora_ablate.run.loop\n",
    })
    graph = import_graph(tmp_path)
    assert graph["lora_ablate.config.schema"] == {"lora_ablate.run.loop"}
    assert graph["lora_ablate.run.loop"] == {"lora_ablate.run.runner"}
    assert upward_imports(graph) == [("lora_ablate.config.schema", "lora_ablate.run.loop")]
    assert circles(graph) == [{"lora_ablate.run.loop", "lora_ablate.run.runner"}]


@pytest.mark.parametrize("module", ["lora_ablate.newpackage.x", "lora_ablate_extra.x"])
def test_a_package_without_a_layer_is_named(module):
    with pytest.raises(AssertionError, match=f"{module} has no layer"):
        layer_of(module)


def private_imports(src: Path) -> list[str]:
    """`from lora_ablate.x import _name` anywhere in src: what modules share is public."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lora_ablate")):
                found += [f"{path.relative_to(src)}: {node.module or '.'}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_name():
    assert not private_imports(SRC), "private names imported across modules:\n" + "\n".join(private_imports(SRC))


def test_the_check_finds_private_imports(tmp_path):
    _write(tmp_path, {"lora_ablate/a.py": "def f():\n    from lora_ablate.b import _g, h\n",
                      "lora_ablate/b.py": "from . import __version__\n", "lora_ablate/c.py": "from .a import _f\n"})
    assert private_imports(tmp_path) == ["lora_ablate/a.py: lora_ablate.b._g", "lora_ablate/c.py: a._f"]
