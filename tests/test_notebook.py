"""notebooks/analysis.ipynb runs top to bottom on a small sweep and on an empty folder (a
sweep whose first run has not finished), writes its report only to its own folder, and
names only columns that the report's runs.csv and summary.csv have."""

import ast
import csv
from pathlib import Path

import nbformat
from fake_records import write_fake_sweep
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def run_notebook(sweep: Path, workdir: Path, monkeypatch) -> list:
    monkeypatch.setenv("LORA_ABLATE_SWEEP", str(sweep))
    monkeypatch.delenv("LORA_ABLATE_NOTEBOOK_REPORT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors[0].get("traceback")
    return outputs


TABLE_LISTS = {"RUN_COLUMNS": "runs.csv", "SUMMARY_COLUMNS": "summary.csv"}


def named_columns() -> dict[str, set[str]]:
    """Every column the notebook names, by the report file that holds it: its RUN_COLUMNS
    and SUMMARY_COLUMNS lists, and each string it indexes `<x>.runs` or `summary` with."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(line for cell in notebook.cells if cell.cell_type == "code"
                     for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
    named: dict[str, set[str]] = {"runs.csv": set(), "summary.csv": set()}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in TABLE_LISTS:
            named[TABLE_LISTS[node.targets[0].id]] |= set(ast.literal_eval(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            table = ("runs.csv" if isinstance(node.value, ast.Attribute) and node.value.attr == "runs"
                     else "summary.csv" if isinstance(node.value, ast.Name) and node.value.id == "summary"
                     else None)
            if table:
                named[table].add(node.slice.value)
    return named


def csv_header(path: Path) -> list[str]:
    with path.open(newline="") as table:
        return next(csv.reader(table))


def test_notebook_uses_only_the_public_api():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "import lora_ablate" in code
    assert "lora_ablate." not in code.replace("lora_ablate.load_sweep", "").replace(
        "lora_ablate.summarize", "").replace("lora_ablate.plot_", "").replace(
        "lora_ablate.write_report", "")


def test_analysis_notebook_executes_on_a_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    write_fake_sweep(sweep, target_sets=("qv", "v", "qkv_ffn"), seeds=range(3),
                     effects={"qkv_ffn": 0.05})
    outputs = run_notebook(sweep, tmp_path, monkeypatch)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # means, diffs, curves, depth
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "qkv_ffn" in tables and "n_pairs" in tables
    report = tmp_path / "notebook-report" / "sweep"
    assert (report / "report.html").is_file()
    assert not (sweep / "report").exists()  # the sweep's own report is never touched
    named = named_columns()
    assert len(named["runs.csv"]) >= 5 and len(named["summary.csv"]) >= 10, named  # the lists were found
    for table, columns in named.items():
        missing = sorted(columns - set(csv_header(report / table)))
        assert not missing, f"the notebook names columns that {table} does not have: {missing}"


def test_analysis_notebook_executes_on_an_empty_folder(tmp_path, monkeypatch):
    sweep = tmp_path / "running"
    sweep.mkdir()
    outputs = run_notebook(sweep, tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs)
    assert "no run has finished" in text and "0 records, 0 completed" in text
    assert not (tmp_path / "notebook-report").exists() and not (sweep / "report").exists()
