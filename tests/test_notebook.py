"""notebooks/analysis.ipynb runs top to bottom on a small sweep."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from fake_records import write_fake_sweep

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_executes_on_a_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    write_fake_sweep(sweep, target_sets=("qv", "v", "qkv_ffn"), seeds=range(3), effects={"qkv_ffn": 0.05})
    monkeypatch.setenv("LORA_ABLATE_SWEEP", str(sweep))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures are shown
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "qkv_ffn" in tables and "p_ttest_holm" in tables
    assert (sweep / "report" / "report.html").is_file()
