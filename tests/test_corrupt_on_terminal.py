"""Records that could not be read are named on stderr, one line each (five at most, then
how many more), by `lora-ablate-report` and at the end of a sweep, not only in a section
at the end of report.md."""

import pandas as pd
import pytest
from fake_records import write_fake_sweep
from omegaconf import OmegaConf

from lora_ablate.app.callbacks import ReportCallback
from lora_ablate.report.corrupt import SHOWN, corrupt_lines
from lora_ablate.report.escape import to_csv
from lora_ablate.report.render import main

TRUNCATED = '{"status": "completed", "run_'


def small_sweep(root, broken: int):
    """A small synthetic sweep with `broken` truncated result.json files, in broken-N/."""
    write_fake_sweep(root, target_sets=("q", "qv"), seeds=range(2), test_size=50, val_size=20)
    for n in range(broken):
        (root / f"broken-{n}").mkdir()
        (root / f"broken-{n}" / "result.json").write_text(TRUNCATED)
    return root


def test_report_cli_names_a_truncated_record_on_stderr(tmp_path, capsys):
    sweep = small_sweep(tmp_path / "sweep", broken=1)
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "out")
    lines = err.strip().splitlines()
    assert lines[0] == (f"lora-ablate-report: warning: 1 record under {sweep} could not be read and are "
                        "left out of the report:"), err
    assert len(lines) == 2 and lines[1].startswith("  broken-0/result.json: "), err
    reason = lines[1].split(": ", 1)[1]
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    recorded = runs.loc[runs["status"].eq("corrupt"), "error"].item()
    assert reason and " ".join(recorded.split()).startswith(reason.rstrip("…")), (reason, recorded)


def test_sweep_end_names_five_unreadable_records_and_counts_the_rest(tmp_path, capsys):
    sweep = small_sweep(tmp_path / "sweep", broken=SHOWN + 2)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "report": {"baseline": "qv"}})
    ReportCallback().on_multirun_end(config)
    out, err = capsys.readouterr()
    assert out.strip() == f"Report: {sweep / 'report' / 'report.html'}"
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"lora-ablate: warning: {SHOWN + 2} records under {sweep} could not be read"), err
    named = [line for line in lines[1:] if line.startswith("  broken-")]
    assert len(named) == SHOWN and len({line.split(":")[0] for line in named}) == SHOWN, err
    assert lines[-1].startswith("  and 2 more (runs.csv in ") and "corrupt" in lines[-1], err
    assert len(lines) == 1 + SHOWN + 1, err


def test_a_report_without_unreadable_records_adds_nothing(tmp_path):
    runs = pd.DataFrame({"path": ["a/result.json", "b/result.json"], "status": ["completed", "failed"],
                         "error": [None, "RuntimeError: out of memory"]})
    (tmp_path / "runs.csv").write_text(to_csv(runs))
    assert corrupt_lines(tmp_path, tmp_path.parent, "lora-ablate") == []


@pytest.mark.parametrize("reason", ["line one\n  line two", "x" * 500])
def test_a_reason_is_one_short_line(tmp_path, reason):
    runs = pd.DataFrame({"path": ["c/result.json"], "status": ["corrupt"], "error": [reason]})
    (tmp_path / "runs.csv").write_text(to_csv(runs))
    lines = corrupt_lines(tmp_path, tmp_path.parent, "lora-ablate")
    assert len(lines) == 2 and "\n" not in lines[1] and len(lines[1]) < 200, lines
    assert lines[1].startswith("  c/result.json: line one line two" if "\n" in reason else "  c/result.json: xxx")
