"""Adaptive seeds: the `adaptive` config section, stage 2 decided from the stage-1 records
(report/adaptive.py), the report's staged family, and a real sweep that adds, then skips,
its stage-2 cells."""

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import records, run_cli, trained
from fake_records import write_fake_sweep, write_manifest
from helpers import compose_run
from omegaconf import OmegaConf

from lora_ablate.config.schema import AdaptiveConfig
from lora_ablate.errors import ConfigError
from lora_ablate.identity import config_hash, run_dirname
from lora_ablate.report.adaptive import stage_two
from lora_ablate.report.family import PairedDifference, paired_difference
from lora_ablate.report.staged import SeedPlan, stage_one
from lora_ablate.report.sweep import load_sweep, summarize
from lora_ablate.report.tables import summary_columns

PLAN = SeedPlan((0, 1, 2, 3, 4), max_seeds=10, alpha_stage1=0.01, continue_p=0.2, alpha=0.05)
# q far below qv (resolved at stage 1), v a little below (open and promising), k equal.
EFFECTS = {"q": -0.1, "v": -0.01, "k": 0.0}
SETS = ("q", "v", "k", "qv")


# ---------------------------------------------------------------- config


def _hash(overrides: list[str]) -> str:
    return config_hash(OmegaConf.to_container(OmegaConf.structured(compose_run(overrides)),
                                              resolve=True, enum_to_str=True))


def test_adaptive_settings_change_no_config_hash_or_run_folder():
    cell = ["model=tiny_bert", "targets=qv", "seed=1"]
    adaptive = ["adaptive.enabled=true", "adaptive.max_seeds=8", "adaptive.continue_p=0.3"]
    assert compose_run(cell + adaptive).adaptive == AdaptiveConfig(True, 8, 0.01, 0.3)
    assert _hash(cell + adaptive) == _hash(cell)
    assert run_dirname(cell + adaptive) == run_dirname(cell)
    assert _hash(cell) != _hash(["model=tiny_bert", "targets=qv", "seed=2"])  # the hash sees seeds


@pytest.mark.parametrize("field, value", [("max_seeds", 1), ("alpha_stage1", 1.5),
                                          ("continue_p", 0.0)])
def test_bad_adaptive_value_is_named(field, value):
    with pytest.raises(ConfigError, match=rf"adaptive\.{field} must .*got {value}"):
        AdaptiveConfig(**{field: value})


def test_seed_plan_adds_the_next_seeds_and_round_trips():
    plan = SeedPlan((0, 2, 5), max_seeds=6, alpha_stage1=0.01, continue_p=0.2, alpha=0.05)
    assert plan.new_seeds == (6, 7, 8)
    assert SeedPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(ValueError, match="stage1_seeds must be an integer ≥ 2"):
        SeedPlan((3,), 5, 0.01, 0.2, 0.05)


# ---------------------------------------------------------------- stage 2 from fake records


def _manifest(root: Path, paths: list[Path], later: dict[str, int], plan: SeedPlan | None) -> None:
    """The records' folders as the sweep, stage 1 unless `later` says otherwise."""
    folders = [p.parent for p in paths]
    stages = {str(f.relative_to(root)): later.get(str(f.relative_to(root)), 1) for f in folders}
    write_manifest(root, folders, stages=stages, seed_plan=plan)


def _stage_one_sweep(root: Path) -> list[Path]:
    paths = write_fake_sweep(root, target_sets=SETS, seeds=PLAN.stage1_seeds, effects=EFFECTS,
                             noise=0.005, test_size=0)
    _manifest(root, paths, {}, PLAN)
    return paths


def _differences(root: Path, seeds: tuple[int, ...]) -> list[PairedDifference]:
    """Each non-baseline set minus qv per seed, straight from the result.json files."""
    acc = {}
    for path in root.rglob("result.json"):
        record = json.loads(path.read_text())
        acc[record["labels"]["target_set"], record["labels"]["seed"]] = \
            record["metrics"]["test/accuracy"]
    return [paired_difference(name, [acc[name, s] - acc["qv", s] for s in seeds])
            for name in SETS if name != "qv"]


def test_stage_two_continues_the_open_promising_set_and_its_baseline(tmp_path):
    _stage_one_sweep(tmp_path)
    expected = stage_one(_differences(tmp_path, PLAN.stage1_seeds), PLAN.design)
    decided = stage_two(tmp_path, PLAN, metric="test/accuracy", baseline="qv")
    (group,) = decided.continuations
    assert group.baseline == "qv" and group.continuing == expected.continuing == ("v",)
    assert decided.run_dirs == {f"rt_sentiment/scale=1.0/{name}-seed{s}"
                                for name in ("v", "qv") for s in PLAN.stage1_seeds}
    assert "continues model=minilm" in decided.line(10) and ": v (baseline qv)" in decided.line(10)


def test_stage_two_ignores_seeds_beyond_stage_one(tmp_path):
    """Rerunning after stage 2 re-derives the same cells: only stage-1 seeds decide."""
    _stage_one_sweep(tmp_path)
    before = stage_two(tmp_path, PLAN, metric="test/accuracy", baseline="qv")
    later = write_fake_sweep(tmp_path / "late", target_sets=("v", "qv"), seeds=PLAN.new_seeds,
                             effects={"v": 0.2}, seed=3, test_size=0)  # stage 2 far from stage 1
    paths = sorted(tmp_path.rglob("result.json"))
    _manifest(tmp_path, paths, {str(p.parent.relative_to(tmp_path)): 2 for p in later}, PLAN)
    assert stage_two(tmp_path, PLAN, metric="test/accuracy", baseline="qv") == before


# ---------------------------------------------------------------- the report's staged family


def _full_sweep(root: Path, plan: SeedPlan | None) -> None:
    first = write_fake_sweep(root, target_sets=SETS, seeds=PLAN.stage1_seeds, effects=EFFECTS,
                             noise=0.005, test_size=0)
    later = write_fake_sweep(root / "stage2", target_sets=("v", "qv"), seeds=PLAN.new_seeds,
                             effects=EFFECTS, noise=0.005, seed=1, test_size=0)
    _manifest(root, [*first, *later],
              {str(p.parent.relative_to(root)): 2 for p in later}, plan)


def test_report_concludes_each_comparison_at_its_stage(tmp_path):
    _full_sweep(tmp_path, PLAN)
    summary = summarize(load_sweep(tmp_path), metric="test/accuracy", baseline="qv")
    rows = summary.set_index("target_set")
    assert rows.loc[["q", "v", "k"], "stage"].tolist() == [1, 2, 1]
    assert rows["stage"].isna()["qv"]  # the baseline is not tested
    early = stage_one(_differences(tmp_path, PLAN.stage1_seeds), PLAN.design).results
    for result in early:  # q and k: Holm at α1 on the stage-1 seeds
        if result.target_set != "v":
            assert rows.loc[result.target_set, "p_ttest_holm"] == pytest.approx(result.p_holm)
    assert rows.loc["q", "resolved"] and not rows.loc["k", "resolved"]
    assert rows.loc["v", "n_pairs"] == 10  # the final test uses all of v's seeds
    # Holm at α2 over the family of 3, v first (the others enter at p = 1)
    assert rows.loc["v", "diff_ci_level"] == pytest.approx(1 - PLAN.design.alpha_final / 3)
    assert "stage" in [c.header for c in summary_columns(summary)]


def test_without_a_design_the_report_is_one_stage(tmp_path):
    _full_sweep(tmp_path, None)
    summary = summarize(load_sweep(tmp_path), metric="test/accuracy", baseline="qv")
    assert summary["stage"].isna().all()
    assert "stage" not in [c.header for c in summary_columns(summary)]
    rows = summary.set_index("target_set")
    assert rows.loc["q", "n_pairs"] == 5 and rows.loc["v", "n_pairs"] == 10


# ---------------------------------------------------------------- a real sweep

ROWS = [(f"film {i} was {'great' if i % 2 else 'dull'}", "pos" if i % 2 else "neg") for i in range(120)]
# qv learns this task in 60 steps and q (at the same budget) does not: stage 1 (seeds 0, 1)
# leaves q against qv unresolved at α1 with p < continue_p = 1, so q continues.
CELL = ["model=tiny_bert", "task=local", "task.text_column=text", "task.label_column=label",
        "task.train_size=80", "task.val_size=20", "task.test_size=20", "train.max_steps=60",
        "train.lr=0.03", "train.batch_size=8", "train.threads=1", "analysis.enabled=false"]
ADAPTIVE = ["adaptive.enabled=true", "adaptive.max_seeds=3", "adaptive.continue_p=1"]


@pytest.fixture()
def project(tmp_path) -> Path:
    (tmp_path / "x.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS))
    return tmp_path


def stamps(sweep_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(sweep_dir)): p.stat().st_mtime_ns for p in sweep_dir.rglob("result*.json")
            if "report" not in p.parts}


def test_adaptive_sweep_adds_stage_two_and_a_rerun_skips_it(project):
    sweep = project / "sweep"
    args = ["-m", *CELL, f"task.path={project / 'x.csv'}", "targets=qv,q", "seed=0,1", *ADAPTIVE,
            f"hydra.sweep.dir={sweep}"]
    first = run_cli(args, project)
    assert first.returncode == 0, first.explain()
    found = records(sweep)
    accuracy = {(r["labels"]["target_set"], r["labels"]["seed"]): r["metrics"]["test/accuracy"]
                for r in found.values()}
    assert accuracy[("q", 0)] != accuracy[("qv", 0)], f"the premise of this test failed: {accuracy}"
    assert set(accuracy) == {(t, s) for t in ("q", "qv") for s in (0, 1, 2)}
    assert "stage 2 adds 2 cells" in first.stdout + first.stderr
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["adaptive"] == {"stage1_seeds": [0, 1], "max_seeds": 3, "alpha_stage1": 0.01,
                                    "continue_p": 1.0, "alpha": pytest.approx(0.05)}
    stages = {c["run_dir"]: c["stage"] for c in manifest["cells"]}
    assert sorted(stages.values()) == [1, 1, 1, 1, 2, 2]
    assert all(stages[d] == (2 if r["labels"]["seed"] == 2 else 1) for d, r in found.items())
    with (sweep / "report" / "summary.csv").open() as f:
        stage = {row["target_set"]: row["stage"] for row in csv.DictReader(f)}
    assert stage == {"q": "2", "qv": ""}

    before = stamps(sweep)
    again = run_cli(args, project)
    assert again.returncode == 0, again.explain()
    assert "stage 2 adds 2 cells" in again.stdout + again.stderr
    assert stamps(sweep) == before and not trained(again.stdout + again.stderr)


def test_adaptive_sweep_needs_two_stage_one_seeds(project):
    args = ["-m", *CELL, f"task.path={project / 'x.csv'}", "targets=qv,q", "seed=0", *ADAPTIVE,
            f"hydra.sweep.dir={project / 'sweep'}"]
    done = run_cli(args, project)
    assert done.returncode == 2, done.explain()
    assert "stage1_seeds must be an integer ≥ 2" in done.stderr and "(0:" in done.stderr
    assert not trained(done.stdout + done.stderr) and not records(project / "sweep")
