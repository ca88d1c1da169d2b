"""Rerunning a sweep from the command line: observing settings retrain nothing, unsafe
override values still give one folder per cell."""

import json
from pathlib import Path

import pytest
from cli_helpers import records, run_cli, trained

ROWS = [(f"film {i} was {'great' if i % 2 else 'dull'}", "pos" if i % 2 else "neg") for i in range(120)]
CELL = ["model=tiny_bert", "task=local", "task.text_column=text", "task.label_column=label",
        "task.train_size=40", "task.val_size=20", "task.test_size=20", "train.max_steps=2",
        "train.batch_size=4", "train.threads=1"]


@pytest.fixture()
def project(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS))
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    return work


def stamps(sweep_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(sweep_dir)): p.stat().st_mtime_ns for p in sweep_dir.rglob("result*.json")
            if "report" not in p.parts}


def test_rerun_with_another_logger_or_thread_count_trains_nothing(project):
    sweep = project / "sweep"
    args = ["-m", *CELL, "task.path=../../data/x.csv", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    first = run_cli(args, project)
    assert first.returncode == 0, first.explain()
    found = records(sweep)
    # A relative path with '/' in an override value still gives one folder per seed.
    assert len(found) == 2 and all("/" not in key for key in found), sorted(found)
    assert all(r["status"] == "completed" for r in found.values())
    before = stamps(sweep)
    for extra in (["logger=wandb", "logger.mode=offline"], ["train.threads=2"]):
        again = run_cli([*args, *extra], project, WANDB_MODE="offline")
        assert again.returncode == 0, again.explain()
        assert stamps(sweep) == before, f"{extra} retrained a completed cell"
        assert not trained(again.stdout + again.stderr), f"{extra}: something trained"


def test_changed_config_keeps_the_first_record(project):
    sweep = project / "sweep"
    # A fixed folder stands for what editing a default or a sweep file does: the same cell
    # folder, another config (an override on the command line would be a variant, a new folder).
    args = ["-m", *CELL, "task.path=../../data/x.csv", "seed=0", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=cell"]
    assert run_cli(args, project).returncode == 0
    first = json.loads(next(sweep.rglob("result.json")).read_text())
    changed = run_cli([*args, "train.warmup_ratio=0.5"], project)  # same cell, new config
    assert changed.returncode == 0, changed.explain()
    (folder,) = {p.parent for p in sweep.rglob("result.json") if "report" not in p.parts}
    kept = json.loads((folder / f"result.{first['config_hash']}.json").read_text())
    assert kept == first
    assert json.loads((folder / "result.json").read_text())["config_hash"] != first["config_hash"]
