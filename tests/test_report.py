"""write_report and the lora-ablate-report CLI on synthetic sweeps: every file, the
problem lists, the tables' formatting and the user-facing errors."""

import base64
import json
import os
import re

import pandas as pd
import pytest
from fake_records import write_fake_sweep, write_json

from lora_ablate.errors import ConfigError
from lora_ablate.files import write_atomic
from lora_ablate.report.render import main, write_report

FILES = ("runs.csv", "summary.csv", "summary.md", "summary.tex", "table5.csv", "missing.csv",
         "report.md", "report.html")
FIGURES = ("means", "differences", "curves", "cost", "heatmap")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two tasks, four target sets, four seeds, with one failed run, one corrupt record,
    one missing cell and one run recorded twice."""
    root = tmp_path_factory.mktemp("sweep")
    paths = write_fake_sweep(root, tasks=("rt_sentiment", "bbc_topics"),
                             target_sets=("q", "qv", "qkvo", "all"), seeds=range(4),
                             effects={"all": 0.05}, noise=0.005, seed=0)
    failed = json.loads(paths[0].read_text())
    failed.update(status="failed", metrics={}, history=[],
                  error={"type": "RuntimeError", "message": "CUDA out of memory in layer 3"})
    write_json(paths[0], failed)
    paths[1].unlink()  # a missing cell
    write_json(root / "rerun" / "result.json", json.loads(paths[2].read_text()))
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text('{"status": "completed", "run_')
    return root


@pytest.fixture(scope="module")
def report(sweep):
    return write_report(sweep, baseline="qv")


def test_report_folder_holds_every_file_and_no_temp_files(report, sweep):
    assert report == sweep / "report"
    for name in FILES:
        assert (report / name).stat().st_size > 0, name
    for stem in FIGURES:
        for ext in ("png", "svg"):
            assert (report / "figures" / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    assert not (report / "figures" / "budget.png").exists()  # one budget: no budget plot
    assert not [p for p in report.rglob("*") if p.name.startswith(".")]


def test_runs_csv_lists_corrupt_and_failed_runs_once(report):
    runs = pd.read_csv(report / "runs.csv")
    assert runs.loc[runs["status"].eq("corrupt"), "path"].tolist() == ["broken/result.json"]
    assert runs["status"].eq("failed").sum() == 1
    assert not runs["run_id"].dropna().duplicated().any()
    assert len(runs) == 2 * 4 * 4 - 1 + 1  # grid - missing + corrupt (the rerun is merged)


def test_html_is_self_contained_and_lists_problems(report):
    text = (report / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "<style>" in text and 'src="figures/' not in text and "<link" not in text
    assert "broken/result.json" in text and "corrupt" in text
    assert "CUDA out of memory in layer 3" in text
    assert "Missing cells (1)" in text
    assert "0123456789abcdef0123456789abcdef01234567" in text  # git commit
    assert "transformers 4.46.3" in text  # package versions
    assert "train.lr = 0.01" in text and "\nseed = " not in text  # config minus per-run keys
    assert "<table>" in text and "Table 5" in text


def test_missing_cells_are_listed(report):
    missing = pd.read_csv(report / "missing.csv")
    assert len(missing) == 1
    assert missing[["task", "target_set", "seed"]].values.tolist() == [["rt_sentiment", "q", 1]]
    assert r"rt\_sentiment" in (report / "report.md").read_text().split("## Missing cells")[1]


def test_markdown_bolds_the_best_mean_and_marks_significant_results(report):
    summary = pd.read_csv(report / "summary.csv")
    markdown = (report / "summary.md").read_text()
    assert "†" in markdown.splitlines()[0]  # the legend comes first
    for _, group in summary.groupby("task"):
        best = group.loc[group["mean"].idxmax()]
        cell = f"**{best['mean']:.3f} ± {best['ci_half']:.3f}**"
        assert cell in markdown
        assert markdown.count(cell) == 2  # in Table 5 and in the per-group table
    assert summary.loc[summary["target_set"].eq("all"), "significant"].all()
    assert re.search(r"\*\*[0-9.]+ ± [0-9.]+\*\* †", markdown)


def test_latex_uses_booktabs_and_escapes(report):
    tex = (report / "summary.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == tex.count(r"\begin{tabular}") > 0
    assert r"rt\_sentiment" in tex and "rt_sentiment" not in tex
    assert r"\textbf{" in tex and r"$\pm$" in tex and r"$^\dagger$" in tex


def test_table5_has_target_sets_as_rows_and_tasks_as_columns(report):
    table = pd.read_csv(report / "table5.csv")
    assert table["target_set"].tolist() == ["q", "qv", "qkvo", "all"]
    assert {"rt_sentiment/mean", "rt_sentiment/ci_half", "bbc_topics/mean"} <= set(table)


def test_report_on_a_sweep_without_completed_runs(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(2), fail_rate=1.0)
    folder = write_report(tmp_path)
    html = (folder / "report.html").read_text()
    assert "No completed runs" in html and "Runs that did not complete (4)" in html
    assert pd.read_csv(folder / "summary.csv").empty


def test_baseline_missing_from_one_group_is_reported_not_fatal(tmp_path):
    write_fake_sweep(tmp_path, tasks=("rt_sentiment",), target_sets=("q", "qv"), seeds=range(2))
    write_fake_sweep(tmp_path, tasks=("bbc_topics",), target_sets=("q", "all"), seeds=range(2))
    folder = write_report(tmp_path)
    summary = pd.read_csv(folder / "summary.csv")
    bbc = summary[summary["task"].eq("bbc_topics")]
    assert set(bbc["baseline"]) == {"q"}  # the group falls back to its first target set
    assert bbc.loc[bbc["target_set"].eq("all"), "diff"].notna().all()
    assert "baseline 'qv' has no completed runs in" in (folder / "report.md").read_text()


def test_a_sweep_without_qv_compares_with_its_first_target_set_and_says_so(tmp_path):
    write_fake_sweep(tmp_path, tasks=("rt_sentiment",), target_sets=("qk", "v"), seeds=range(3))
    folder = write_report(tmp_path)
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["baseline"]) == {"v"}  # first in the LoRA paper's Table 5 order
    assert "no qv runs" in (folder / "report.md").read_text()


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "summary.csv", "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["summary.csv"]


def test_cli_on_an_empty_directory_exits_2_with_a_clear_message(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no run records under {tmp_path}" in err and "Traceback" not in err
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_baseline_is_a_clear_error(sweep, capsys):
    with pytest.raises(ConfigError, match=r"'qk'.*q, qv, qkvo, all"):
        write_report(sweep, baseline="qk")
    assert main([str(sweep), "--baseline", "qk"]) == 2
    assert "Target sets present: q, qv, qkvo, all" in capsys.readouterr().err


def test_cli_writes_the_report_and_prints_its_folder(tmp_path, capsys):
    write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(3))
    assert main([str(tmp_path), "--metric", "test/loss"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert set(summary["metric"]) == {"test/loss"}


def test_long_figure_title_stays_inside_a_single_panel_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lora_ablate.report.figure_base import panel_grid

    title = "Paired difference to qv over shared seeds, 95% t-interval (red: significant after Holm)"
    fig, _ = panel_grid(1, title)
    renderer = FigureCanvasAgg(fig).get_renderer()
    assert "\n" in fig.get_suptitle()
    box = fig._suptitle.get_window_extent(renderer)  # matplotlib has no public getter for the Text
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    assert box.y1 <= fig.bbox.height
    axes_top = max(ax.get_window_extent(renderer).y1 for ax in fig.axes)
    assert box.y0 > axes_top, "the title must not run into the panels"


def test_cli_out_and_tune_options(tmp_path, capsys):
    write_fake_sweep(tmp_path / "sweep", target_sets=("qv", "q"), seeds=range(2))
    out = tmp_path / "elsewhere"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "report.html").is_file() and not (tmp_path / "sweep" / "report").exists()
    # Every run of this sweep has the same lr: tuning on it is an error, not an "edge of grid".
    assert main([str(tmp_path / "sweep"), "--out", str(out), "--tune", "train.lr"]) == 2
    assert "train.lr has one value" in capsys.readouterr().err
    assert main([str(tmp_path / "sweep"), "--tune", "train.lr; rm"]) == 2
    assert "'train.lr; rm' is not one" in capsys.readouterr().err
