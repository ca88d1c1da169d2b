"""How the report reads: short group labels with the shared overrides in a footnote,
collapsed runs under their own heading, ties at the top said, and report.html's compact
main table with the full one behind a fold."""

import json
from html.parser import HTMLParser

import pandas as pd
from fake_records import write_fake_sweep, write_json

from lora_ablate.report.group_labels import GroupLabels
from lora_ablate.report.render import write_report
from lora_ablate.report.tables import COMPACT, TIED

SHARED = {"train.max_steps": "50", "task.max_train": "200", "train.warmup_ratio": "0.06",
          "train.batch_size": "16"}


def edit_records(paths, change):
    for path in paths:
        record = json.loads(path.read_text())
        change(record)
        write_json(path, record)


class Tables(HTMLParser):
    """Every <table>'s header cells, and whether it sits inside a <details> fold."""

    def __init__(self):
        super().__init__()
        self.tables, self.depth, self.in_th = [], 0, False

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self.depth += 1
        elif tag == "table":
            self.tables.append({"folded": self.depth > 0, "heads": []})
        self.in_th = tag == "th"

    def handle_endtag(self, tag):
        if tag == "details":
            self.depth -= 1
        if tag == "th":
            self.in_th = False

    def handle_data(self, data):
        if self.in_th:
            self.tables[-1]["heads"].append(data)


def section(text, start, end):
    return text[text.index(start):text.index(end, text.index(start))]


def test_group_labels_keep_what_differs_and_number_long_ones():
    labels = GroupLabels.of(["a=1,lr=0.1,steps=50", "a=1,lr=0.01,steps=50"])
    assert labels.short == {"a=1,lr=0.1,steps=50": "lr=0.1", "a=1,lr=0.01,steps=50": "lr=0.01"}
    assert labels.footnote() == ("Overrides shared by every group (left out of the titles): "
                                 "a=1, steps=50.")
    long = [f"x=1,model.path=/very/long/path/to/a/checkpoint/number/{i}" for i in (1, 2)]
    numbered = GroupLabels.of(long)
    assert sorted(numbered.short.values()) == ["group 1", "group 2"]
    assert "group 1 = model.path=/very/long/path/to/a/checkpoint/number/1" in numbered.footnote()
    assert GroupLabels.of([""]).footnote() is None
    # a variant the labels were not made from (a tuned row without its tuned key)
    assert labels.label("a=1,steps=50") == ""


def test_shared_overrides_leave_the_titles_for_a_footnote(tmp_path):
    paths = write_fake_sweep(tmp_path, target_sets=("q", "qv"), seeds=range(3),
                             lrs=(0.001, 0.0001), test_size=0)
    edit_records(paths, lambda r: r["labels"]["variant"].update(SHARED))
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    summary = section(md, "## Summary per group", "## Results in the layout")
    headings = [line for line in md.splitlines() if line.startswith(("**minilm", "### "))]
    assert headings and not any("max\\_steps" in h or "max_steps" in h for h in headings)
    assert any("train.lr=0.001" in h for h in headings)
    assert summary.count("Overrides shared by every group") == 1
    assert "train.max\\_steps=50" in summary or "train.max_steps=50" in summary
    svg = (out / "figures" / "means.svg").read_text()
    assert "train.lr=0.0001" in svg and "max_steps" not in svg  # panel titles are short
    csv = pd.read_csv(out / "summary.csv")
    assert csv["variant"].str.contains("train.max_steps=50").all()  # the CSV keeps it all


def test_collapsed_runs_are_listed_as_collapsed_not_as_unfinished(tmp_path):
    paths = write_fake_sweep(tmp_path, target_sets=("q", "qv"), seeds=range(3))
    edit_records(paths[:1], lambda r: r.update(collapsed=True))
    html = (write_report(tmp_path) / "report.html").read_text()
    assert "Runs that did not complete (0)" in html
    collapsed = section(html, "Collapsed runs (1)", "</table>")
    assert json.loads(paths[0].read_text())["run_id"] in collapsed


def test_a_tie_at_the_top_is_said_and_neither_set_is_bold(tmp_path):
    paths = write_fake_sweep(tmp_path, target_sets=("q", "qv", "v"), seeds=range(3),
                             effects={"q": 0.05, "qv": 0.05}, test_size=0)
    by_seed = {}
    for path in paths:  # qv's metrics become q's, seed by seed: an exact tie at the top
        record = json.loads(path.read_text())
        by_seed.setdefault(record["labels"]["seed"], {})[record["labels"]["target_set"]] = (path, record)
    for cells in by_seed.values():
        path, record = cells["qv"]
        record["metrics"] = cells["q"][1]["metrics"]
        write_json(path, record)
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines()
            if line.startswith(("| q ", "| qv ", "| v "))}
    assert TIED in rows["q"] and TIED in rows["qv"] and TIED not in rows["v"]
    assert "**" not in rows["q"] + rows["qv"]
    verdict = section(md, "## Verdict", "## Summary per group")
    assert "a tie between q, qv" in verdict


def test_html_main_table_is_compact_and_the_full_table_is_folded(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("q", "qv", "all"), seeds=range(4))
    html = (write_report(tmp_path) / "report.html").read_text()
    parser = Tables()
    parser.feed(section(html, "<h2>Summary per group</h2>", "<h2>Results in the layout"))
    (main, full) = parser.tables
    assert not main["folded"] and main["heads"] == [h for h in COMPACT if h in main["heads"]]
    assert {"target set", "mean ± CI", "Δ vs baseline [interval]", "p (t, Holm)",
            "resolved"} <= set(main["heads"])
    assert full["folded"] and len(full["heads"]) > len(main["heads"]) + 4
    assert set(main["heads"]) < set(full["heads"]) and "n pairs" in full["heads"]
    assert '<div class="wide">' in html and ".wide{overflow-x:auto}" in html


def test_no_curves_figure_when_runs_evaluate_only_at_the_end(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("q", "qv"), seeds=range(2), history_points=1)
    out = write_report(tmp_path)
    assert not (out / "figures" / "curves.png").exists()
    assert (out / "figures" / "means.png").exists()
