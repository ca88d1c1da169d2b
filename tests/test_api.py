"""The public API: `import lora_ablate` is light, load_sweep works on running sweeps, plots
return Figures and write nothing, write_report writes where it is told."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_records import write_fake_sweep
from matplotlib.figure import Figure

import lora_ablate
from lora_ablate.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"


def test_importing_the_report_side_imports_no_torch():
    code = ("import lora_ablate.report.render, lora_ablate.report.summary, "
            "lora_ablate.report.plots, lora_ablate, sys; "
            "from lora_ablate import load_sweep, summarize, write_report, plot_means; "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not bad, bad")
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_public_names_and_unknown_name():
    assert {"load_sweep", "summarize", "write_report", "plot_means", "plot_curves",
            "plot_differences", "plot_depth", "Sweep"} <= set(dir(lora_ablate))
    with pytest.raises(AttributeError, match="no_such"):
        lora_ablate.no_such


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    write_fake_sweep(root, tasks=("rt_sentiment", "bbc_topics"), target_sets=("q", "qv", "all"),
                     seeds=range(3), effects={"all": 0.05})
    return root


def test_load_sweep_and_summarize(sweep_dir):
    sweep = lora_ablate.load_sweep(sweep_dir)
    assert len(sweep.runs) == 2 * 3 * 3 == sweep.completed
    summary = lora_ablate.summarize(sweep)
    assert len(summary) == 2 * 3
    assert summary["n"].tolist() == [3] * 6
    assert set(summary["metric"]) == {"test/accuracy"}


def test_summarize_takes_a_sweep_folder_and_a_sweep_prints_short(sweep_dir):
    from_path = lora_ablate.summarize(sweep_dir)
    from_text = lora_ablate.summarize(str(sweep_dir))
    from_sweep = lora_ablate.summarize(lora_ablate.load_sweep(sweep_dir))
    pd.testing.assert_frame_equal(from_path, from_sweep)
    pd.testing.assert_frame_equal(from_text, from_sweep)
    text = repr(lora_ablate.load_sweep(sweep_dir))
    assert text == f"Sweep(path={str(sweep_dir)!r}, records=18, completed=18, runs=18 rows)"


def test_plots_return_figures_and_write_nothing(sweep_dir):
    before = sorted(p for p in sweep_dir.rglob("*"))
    sweep = lora_ablate.load_sweep(sweep_dir)
    for plot in (lora_ablate.plot_means, lora_ablate.plot_differences, lora_ablate.plot_curves,
                 lora_ablate.plot_depth):
        assert isinstance(plot(sweep), Figure), plot.__name__
    means = lora_ablate.plot_means(sweep)
    assert len([ax for ax in means.axes if ax.get_visible()]) == 2  # a panel per task
    assert sorted(p for p in sweep_dir.rglob("*")) == before


def test_a_sweep_with_no_finished_run_gives_empty_frames_and_a_note(tmp_path):
    sweep = lora_ablate.load_sweep(tmp_path)
    assert sweep.runs.empty and sweep.completed == 0
    assert "no run has finished" in sweep.notes[0]
    assert lora_ablate.summarize(sweep).empty
    for plot in (lora_ablate.plot_means, lora_ablate.plot_curves):
        assert isinstance(plot(sweep), Figure)


def test_a_sweep_with_only_failed_runs(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(2), fail_rate=1.0)
    sweep = lora_ablate.load_sweep(tmp_path)
    assert len(sweep.runs) == 4 and sweep.completed == 0
    assert lora_ablate.summarize(sweep).empty
    assert isinstance(lora_ablate.plot_curves(sweep), Figure)


def test_load_sweep_of_a_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        lora_ablate.load_sweep(tmp_path / "nope")


def test_write_report_to_a_chosen_folder(sweep_dir, tmp_path):
    out = lora_ablate.write_report(sweep_dir, tmp_path / "mine", baseline="qv")
    assert out == tmp_path / "mine" and (out / "report.html").is_file()
    assert not (sweep_dir / "report").exists()
    assert len(pd.read_csv(out / "summary.csv")) == 6
