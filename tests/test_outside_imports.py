"""The benchmarks, scripts and notebooks import lora_ablate names that no fast test runs
(the benchmarks run only in the slow suite). Read with ast, every `from lora_ablate... import
name` there must still resolve, so a moved function breaks this fast test rather than a
benchmark an hour into CI."""

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def sources() -> list[tuple[str, str]]:
    """(label, python source) for each benchmark, each notebook code cell, each python -c in scripts/."""
    found = [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / "benchmarks").glob("*.py"))]
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                # IPython magics are not Python.
                code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
                found.append((f"{notebook.relative_to(REPO)} cell {number}", code))
    for script in sorted((REPO / "scripts").glob("*")):
        for snippet in re.findall(r"python3? -c '([^']*)'", script.read_text()):
            found.append((str(script.relative_to(REPO)), snippet))
    return found


def imported_names(code: str) -> list[tuple[str, str]]:
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lora_ablate"):
            names.extend((node.module, alias.name) for alias in node.names)
    return names


def test_the_sources_are_found():
    labels = [label for label, _ in sources()]
    assert any(label.startswith("benchmarks/bench_train.py") for label in labels)
    assert any(label.startswith("notebooks/") for label in labels)


@pytest.mark.parametrize("label,code", sources(), ids=[label for label, _ in sources()])
def test_every_lora_ablate_name_imported_outside_src_exists(label, code):
    missing = []
    for module_name, name in imported_names(code):
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            try:  # `from package import submodule`
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"{label} imports names that no longer exist: {missing}"


def test_a_moved_name_is_caught():
    assert imported_names("def f():\n    from lora_ablate.run.session import pick_device\n") == [
        ("lora_ablate.run.session", "pick_device")
    ]
    assert not hasattr(importlib.import_module("lora_ablate.run.session"), "pick_device")
