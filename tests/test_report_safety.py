"""Hostile values from records (task names, errors) stay text in every report file."""

import csv
import io
import json

import pandas as pd
import pytest
from fake_records import write_fake_sweep, write_json

from lora_ablate.report.escape import csv_safe, md_escape
from lora_ablate.report.render import write_report

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.example","click")'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    paths = write_fake_sweep(root, tasks=("rt_sentiment",), target_sets=("q", "qv"),
                             seeds=range(2))
    for path in paths:  # the task name is a script tag in labels and config
        record = json.loads(path.read_text())
        record["labels"]["task"] = SCRIPT
        record["config"]["task"]["name"] = SCRIPT
        write_json(path, record)
    failed = json.loads(paths[0].read_text())
    failed.update(status="failed", metrics={}, history=[],
                  error={"type": "RuntimeError", "message": FORMULA})
    write_json(paths[0], failed)
    return write_report(root)


def test_html_escapes_a_script_task_name(report):
    html = (report / "report.html").read_text()
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markdown_has_no_raw_html_from_data(report):
    for name in ("report.md", "summary.md"):
        text = (report / name).read_text()
        assert "<script" not in text and "</script" not in text, name
        assert "&lt;script&gt;" in text, name
    assert "\\=HYPERLINK" not in (report / "report.md").read_text()  # mid-cell: no escape needed
    assert 'RuntimeError: =HYPERLINK("http://evil.example","click")' in (
        report / "report.md").read_text()


def test_csv_cells_that_start_a_formula_are_defused(report):
    rows = list(csv.DictReader(io.StringIO((report / "runs.csv").read_text())))
    errors = [r["error"] for r in rows if r["status"] == "failed"]
    assert errors == ["RuntimeError: " + FORMULA]  # starts with R: left alone
    frame = pd.DataFrame({"error": [FORMULA, "-0.5", "+cmd", "@SUM(A1)", "\tx", "fine"],
                          "value": [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    safe = csv_safe(frame)
    assert safe["error"].tolist() == ["'" + FORMULA, "-0.5", "'+cmd", "'@SUM(A1)", "'\tx", "fine"]
    assert safe["value"].tolist() == frame["value"].tolist()  # numbers are never prefixed


def test_an_error_message_that_is_a_formula_is_defused_in_runs_csv(tmp_path):
    paths = write_fake_sweep(tmp_path, target_sets=("q", "qv"), seeds=range(2))
    record = json.loads(paths[0].read_text())
    record.update(status="failed", metrics={}, history=[], error=None, run_id=FORMULA)
    write_json(paths[0], record)
    runs = list(csv.DictReader(io.StringIO((write_report(tmp_path) / "runs.csv").read_text())))
    assert [r["run_id"] for r in runs if r["status"] == "failed"] == ["'" + FORMULA]


@pytest.mark.parametrize("text, escaped", [
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("[click](javascript:alert(1))", r"\[click\](javascript:alert(1))"),
    ("![img](http://x/y.png)", r"\!\[img\](http://x/y.png)"),
    ("a | b", r"a \| b"), ("rt_sentiment", r"rt\_sentiment"), ("**bold**", r"\*\*bold\*\*"),
    ("# heading", r"\# heading"), ("- item", r"\- item"), ("1. item", r"1\. item"),
    ("line\nbreak", "line break"), ("`code`", r"\`code\`"), ("0.812", "0.812"),
    ("-0.01", "-0.01"), ("a & b", "a &amp; b"),
])
def test_md_escape(text, escaped):
    assert md_escape(text) == escaped


def test_verdict_and_tuned_slots_render_first_and_escaped(tmp_path, monkeypatch):
    from lora_ablate.report import render

    write_fake_sweep(tmp_path, target_sets=("q", "qv"), seeds=range(2))
    monkeypatch.setattr(render, "verdict_paragraphs", lambda summary, tuned, confidence: [
        render.Verdict(("minilm",), "minilm · rt_sentiment", f"q beats qv {SCRIPT} by **0.01**.")])
    monkeypatch.setattr(render, "tuned_frame", lambda sweep, tune, **kw: pd.DataFrame({
        "model": ["minilm"], "task": ["rt_sentiment"], "budget": ["reference"],
        "budget_scale": [1.0], "variant": [""], "target_set": ["q"], "train.lr": [0.001],
        "val_mean": [0.8], "edge_of_grid": [False], "n": [2], "mean": [0.8],
        "note": [FORMULA]}))
    out = write_report(tmp_path, tune=["train.lr"])
    md = (out / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Summary per group") < md.index(
        "## Tuned comparison (train.lr)") < md.index("## Figures")
    assert r"q beats qv &lt;script&gt;alert(1)&lt;/script&gt; by \*\*0.01\*\*." in md
    html = (out / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html
    tuned = list(csv.DictReader(io.StringIO((out / "tuned.csv").read_text())))
    assert tuned[0]["note"] == "'" + FORMULA and tuned[0]["train.lr"] == "0.001"
