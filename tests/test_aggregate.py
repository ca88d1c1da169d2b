"""runs_frame and summarize, with every statistic checked against an independent
recomputation from the result.json files (numpy/scipy directly, Holm by hand)."""

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from fake_records import write_fake_sweep, write_json
from lora_ablate.records import Module, Plan
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from lora_ablate.report.baselines import check_baseline
from lora_ablate.report.metrics import resolve_metrics
from lora_ablate.report.runs import record_frames, runs_frame
from lora_ablate.report.stats import holm
from lora_ablate.report.summary import summarize
from lora_ablate.report.sweep_shape import missing_cells
from lora_ablate.errors import ConfigError
from lora_ablate.records import find_records

TASKS = ("rt_sentiment", "bbc_topics")
SETS = ("q", "qv", "qkvo", "all")


def frame(root: Path):
    loaded = find_records(root)
    return loaded, runs_frame(loaded, root=root)


def read_metric(root: Path, metric: str = "test/accuracy") -> dict:
    """(task, target_set) -> {seed: value}, straight from the JSON files."""
    values: dict = defaultdict(dict)
    for path in root.rglob("result.json"):
        rec = json.loads(path.read_text())
        if rec["status"] == "completed":
            labels = rec["labels"]
            values[labels["task"], labels["target_set"]][labels["seed"]] = rec["metrics"][metric]
    return values


def holm_by_hand(pvalues: list[float]) -> list[float]:
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    write_fake_sweep(root, tasks=TASKS, target_sets=SETS, seeds=range(6), noise=0.01, seed=3,
                     effects={"all": 0.04, "q": -0.01})
    # An unpaired seed: qkvo lacks seed 5 in one task, so pairs are over seeds 0-4 only.
    (root / "bbc_topics" / "scale=1.0" / "qkvo-seed5" / "result.json").unlink()
    return root


def test_runs_frame_has_one_row_per_record_with_labels_metrics_and_plan(sweep):
    _, runs = frame(sweep)
    assert len(runs) == len(TASKS) * len(SETS) * 6 - 1
    for column in ("path", "run_id", "status", "model", "task", "target_set", "budget",
                   "budget_scale", "seed", "test/accuracy", "val/loss", "lora_params",
                   "head_params", "lora_rank", "budget_target", "budget_actual",
                   "budget_deviation", "train_seconds", "tokens_per_second",
                   "peak_memory_bytes", "error"):
        assert column in runs.columns, column
    assert set(runs["status"]) == {"completed"}
    assert not runs["path"].str.startswith("/").any()  # relative to the sweep dir
    ranks = runs.drop_duplicates("target_set").set_index("target_set")["lora_rank"]
    assert ranks["qv"] == "8" and ranks["q"] == "16" and ranks["all"] == "1–2"


def test_rank_text():
    def plan(*ranks):
        return Plan(modules=[Module(f"m{i}", "q", i, 4, 4, r, 8 * r) for i, r in enumerate(ranks)])
    assert plan(8, 8).rank_text() == "8"
    assert plan(5, 4, 5).rank_text() == "4–5"
    assert plan().rank_text() is None


def test_corrupt_records_are_rows_not_dropped(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv",), seeds=range(2))
    bad = tmp_path / "half" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "completed", "run_id": "x", "metr')
    _, runs = frame(tmp_path)
    corrupt = runs[runs["status"].eq("corrupt")]
    assert list(corrupt["path"]) == ["half/result.json"]
    assert "unreadable" in corrupt["error"].iloc[0]
    assert runs["status"].eq("completed").sum() == 2


def test_records_of_the_wrong_shape_are_corrupt_rows(tmp_path):
    write_json(tmp_path / "odd" / "result.json", {"status": "completed", "plan": [1, 2]})
    _, runs = frame(tmp_path)
    assert runs["status"].tolist() == ["corrupt"] and "malformed" in runs["error"].iloc[0]


def test_duplicate_run_ids_keep_the_newest_completed_record(tmp_path):
    (first,) = write_fake_sweep(tmp_path, target_sets=("qv",), seeds=[0])
    record = json.loads(first.read_text())
    newer = {**record, "metrics": {**record["metrics"], "test/accuracy": 0.5},
             "provenance": {**record["provenance"], "ended_at": "2030-01-01T00:00:00+00:00"}}
    newest_failed = {**record, "status": "failed", "metrics": {},
                     "provenance": {**record["provenance"], "ended_at": "2031-01-01T00:00:00"},
                     "error": {"type": "RuntimeError", "message": "boom"}}
    write_json(tmp_path / "rerun" / "result.json", newer)
    write_json(tmp_path / "rerun2" / "result.json", newest_failed)
    frames = record_frames(find_records(tmp_path), root=tmp_path)
    runs = frames.runs
    assert len(runs) == 1
    assert runs["test/accuracy"].iloc[0] == 0.5 and runs["path"].iloc[0] == "rerun/result.json"
    assert sorted(frames.superseded["path"]) == sorted([str(first.relative_to(tmp_path)),
                                                        "rerun2/result.json"])
    assert any("2 older records" in note for note in runs.attrs["notes"])


def test_summary_matches_independent_recomputation(sweep):
    _, runs = frame(sweep)
    summary = summarize(runs, metric="test/accuracy", baseline="qv", confidence=0.95)
    truth = read_metric(sweep)
    assert len(summary) == len(TASKS) * len(SETS)
    for task in TASKS:
        rows = summary[summary["task"].eq(task)].set_index("target_set")
        base = truth[task, "qv"]
        raw = {}
        for name in SETS:
            values = np.array(list(truth[task, name].values()))
            n, mean, std = len(values), values.mean(), values.std(ddof=1)
            low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
            row = rows.loc[name]
            assert (row["n"], row["mean"], row["std"]) == (n, pytest.approx(mean),
                                                           pytest.approx(std))
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
            seeds = sorted(set(base) & set(truth[task, name]))
            a = np.array([truth[task, name][s] for s in seeds])
            b = np.array([base[s] for s in seeds])
            assert row["n_pairs"] == len(seeds)
            assert row["diff"] == pytest.approx((a - b).mean(), abs=1e-12)
            if name == "qv":
                assert math.isnan(row["p_ttest"]) and not row["significant"]
                continue
            raw[name] = (stats.ttest_rel(a, b).pvalue, stats.wilcoxon(a, b).pvalue)
            assert row["p_ttest"] == pytest.approx(raw[name][0])
            assert row["p_wilcoxon"] == pytest.approx(raw[name][1])
        names = list(raw)
        for i, column in enumerate(("p_ttest_holm", "p_wilcoxon_holm")):
            expected = holm_by_hand([raw[n][i] for n in names])
            assert list(rows.loc[names, column]) == pytest.approx(expected)
        assert list(rows.loc[names, "significant"]) == [
            p < 0.05 for p in holm_by_hand([raw[n][0] for n in names])]
        means = {name: np.mean(list(truth[task, name].values())) for name in SETS}
        best_first = sorted(SETS, key=lambda name: -means[name])
        assert [rows.loc[name, "rank"] for name in best_first] == [1, 2, 3, 4]
    assert summary["n_pairs"][summary["target_set"].eq("qkvo")].min() == 5


def test_known_effects_are_found_and_null_effects_are_not(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "all", "q", "k"), seeds=range(10),
                     effects={"all": 0.05, "q": -0.03, "k": 0.0}, noise=0.01, seed=0)
    _, runs = frame(tmp_path)
    rows = summarize(runs, baseline="qv").set_index("target_set")
    assert rows.loc["all", "significant"] and rows.loc["all", "diff"] > 0.04
    assert rows.loc["q", "significant"] and rows.loc["q", "diff"] < -0.02
    assert not rows.loc["k", "significant"]
    assert rows.loc["all", "rank"] == 1 and rows.loc["q", "rank"] == 4
    assert rows.loc["all", "diff_ci_low"] > 0 > rows.loc["q", "diff_ci_high"]


def test_lower_is_better_metrics_rank_the_smallest_first(sweep):
    _, runs = frame(sweep)
    rows = summarize(runs, metric="test/loss").query("task == 'rt_sentiment'")
    assert rows.sort_values("mean")["rank"].tolist() == [1, 2, 3, 4]
    forced = summarize(runs, metric="test/loss", higher_is_better=True)
    assert forced.query("task == 'rt_sentiment'").sort_values("mean")["rank"].iloc[0] == 4


def test_undefined_statistics_are_nan_not_errors(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "v"), seeds=[0], seed=1)
    for path in tmp_path.rglob("result.json"):  # make v identical to qv on seeds 1 and 2
        record = json.loads(path.read_text())
        for seed in (1, 2):
            twin = {**record, "run_id": f"{record['run_id']}-{seed}",
                    "labels": {**record["labels"], "seed": seed}, "metrics": {
                        **record["metrics"], "test/accuracy": 0.7 + seed / 100}}
            write_json(path.parent.parent / f"{path.parent.name}-{seed}" / "result.json", twin)
    _, runs = frame(tmp_path)
    rows = summarize(runs).set_index("target_set")
    # seed 0 differs, seeds 1-2 are identical: 3 pairs, so the tests are defined
    assert rows.loc["v", "n_pairs"] == 3
    runs_12 = runs[runs["seed"].isin([1, 2])]
    rows = summarize(runs_12).set_index("target_set")
    # identical on every seed: a tie, p = 1 in the Holm family, never significant
    assert rows.loc["v", "diff"] == 0 and rows.loc["v", "p_ttest"] == 1
    assert rows.loc["v", "p_ttest_holm"] == 1 and not rows.loc["v", "significant"]
    assert "tie" in rows.loc["v", "test_note"]
    one = summarize(runs[runs["seed"].eq(0)]).set_index("target_set")
    assert one.loc["v", "n"] == 1 and math.isnan(one.loc["v", "ci_low"])
    assert math.isnan(one.loc["v", "p_ttest"]) and math.isnan(one.loc["v", "diff_ci_low"])


def test_baseline_absent_from_a_group_falls_back_to_the_first_conventional_set(sweep):
    _, runs = frame(sweep)
    partial = runs[~(runs["task"].eq("bbc_topics") & runs["target_set"].eq("qv"))]
    summary = summarize(partial, baseline="qv")
    bbc = summary[summary["task"].eq("bbc_topics")].set_index("target_set")
    assert set(bbc["baseline"]) == {"q"}  # q comes first in TARGET_ORDER among q, qkvo, all
    assert bbc.loc["q", "diff"] == 0 and bbc["p_ttest"].drop("q").notna().all()
    assert set(summary.loc[summary["task"].eq("rt_sentiment"), "baseline"]) == {"qv"}
    assert any("bbc_topics" in note and "'qv'" in note and "'q'" in note
               for note in summary.attrs["notes"])
    assert bbc["baseline_note"].str.contains("'q'").all()


def test_baseline_absent_from_the_sweep_is_a_config_error(sweep):
    _, runs = frame(sweep)
    with pytest.raises(ConfigError, match=r"'qk'.*q, qv, qkvo, all"):
        summarize(runs, baseline="qk")
    check_baseline(runs, "all")  # present: no error


def test_unknown_metric_is_a_config_error_naming_the_present_ones(sweep):
    _, runs = frame(sweep)
    with pytest.raises(ConfigError, match=r"test/f1.*test/accuracy"):
        summarize(runs, metric="test/f1")


def test_metric_defaults_to_the_configured_task_metric(sweep, tmp_path):
    loaded, runs = frame(sweep)
    assert resolve_metrics(loaded, runs) == dict.fromkeys(sorted(TASKS), "test/accuracy")
    assert resolve_metrics(loaded, runs, "test/loss")["bbc_topics"] == "test/loss"
    (path,) = write_fake_sweep(tmp_path, target_sets=("qv",), seeds=[0])
    record = json.loads(path.read_text())
    record["config"]["task"]["metric"] = "f1"  # configured but never recorded: fall back
    write_json(path, record)
    loaded, runs = frame(tmp_path)
    assert resolve_metrics(loaded, runs) == {"rt_sentiment": "test/accuracy"}


def test_missing_cells_are_the_unrecorded_part_of_the_grid(sweep):
    _, runs = frame(sweep)
    missing = missing_cells(runs)
    assert missing[["task", "target_set", "seed"]].values.tolist() == [
        ["bbc_topics", "qkvo", 5]]
    failed = runs.copy()
    failed.loc[failed.index[0], "status"] = "failed"  # failed runs are recorded, not missing
    assert len(missing_cells(failed)) == 1


@given(st.lists(st.one_of(st.floats(0, 1), st.just(math.nan)), max_size=12))
def test_holm_matches_the_textbook_procedure(pvalues):
    adjusted = holm(pvalues)
    present = [p for p in pvalues if not math.isnan(p)]
    expected = iter(holm_by_hand(present))
    for p, a in zip(pvalues, adjusted):
        if math.isnan(p):
            assert math.isnan(a)
        else:
            assert a == pytest.approx(next(expected)) and p <= a + 1e-12 <= 1 + 1e-12
