"""The report's statistics on synthetic sweeps whose true effects are known: untestable
constant differences, the Holm family, the family procedure's SE, seed status, power,
manifest, tuning and the verdict's numbers (checked against independent recomputation)."""

import json
import math
import re
from itertools import product

import numpy as np
import pandas as pd
import pytest

from lora_ablate.errors import ConfigError
from fake_records import make_record, write_fake_sweep, write_manifest
from scipy import stats as sps

from lora_ablate.records import find_records, write_record
from lora_ablate.report import stats
from lora_ablate.report.runs import record_frames, runs_frame
from lora_ablate.report.summary import summarize
from lora_ablate.report.tuning import tuned_frame
from lora_ablate.report.verdict import verdicts


def load(root):
    loaded = find_records(root)
    return loaded, runs_frame(loaded, root=root)


def shift_sweep(root, seeds=range(8), shift=0.01, size=0):
    """qv and two target sets that sit exactly `shift` (k) and 0 (v) from qv on every seed,
    with different base accuracies per seed (so the float differences are not bit-equal)."""
    rng = np.random.default_rng(0)
    for s in seeds:
        base = 0.7 + 0.013 * s
        for name, acc in (("qv", base), ("k", base + shift), ("v", base)):
            record = make_record(model="m", task="t", target_set=name, budget="reference",
                                 scale=1.0, seed=s, accuracy=acc, history_points=3,
                                 index=s, rng=rng, test_size=size)
            write_record(root / f"{name}-{s}", record)


def test_constant_paired_differences_are_never_p0_nor_significant(tmp_path):
    shift_sweep(tmp_path)
    loaded, runs = load(tmp_path)
    rows = summarize(runs, loaded=loaded).set_index("target_set")
    k = rows.loc["k"]
    assert k["diff"] == pytest.approx(0.01) and k["n_pairs"] == 8
    assert math.isnan(k["p_ttest"]) and not k["testable"] and not k["significant"]
    assert "zero variance" in k["test_note"] and not k["resolved"]
    assert k["p_signflip"] == pytest.approx(2 / 2**8)  # exact: the two extreme patterns
    assert (rows[["p_ttest", "p_signflip", "p_wilcoxon"]].fillna(1) > 0).all().all()
    assert rows.loc["v", "p_ttest"] == 1 and rows.loc["v", "p_ttest_holm"] == 1


def test_signflip_p_is_exact_against_enumeration():
    d = np.array([0.3, -0.1, 0.2, 0.25, 0.05])
    means = [abs(np.dot(s, d)) / 5 for s in product((1, -1), repeat=5)]
    expected = np.mean([m >= abs(d.mean()) - 1e-12 for m in means])
    assert stats.signflip_p(d) == pytest.approx(expected)
    assert stats.signflip_p(np.full(5, 0.01)) == pytest.approx(2 / 32)


def test_signed_rank_p_is_the_exact_wilcoxon_p():
    d = np.array([0.3, -0.1, 0.2, 0.25, 0.05, 0.4, -0.15])
    assert stats.signed_rank_p(d) == pytest.approx(sps.wilcoxon(d, method="exact").pvalue)
    assert stats.signed_rank_p(np.zeros(6)) == 1.0


def test_holm_family_counts_ties_and_untestable_members():
    # three members; the second untestable: it counts as p = 1 and stays NaN
    out = stats.holm_family([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.03) and math.isnan(out[1])
    assert out[2] == pytest.approx(max(0.03, 0.04 * 2))


def test_holm_family_is_every_non_baseline_target_set(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q", "k", "all"), seeds=range(5),
                     effects={"all": 0.03}, noise=0.01, test_size=0)
    loaded, runs = load(tmp_path)
    rows = summarize(runs).set_index("target_set")
    raw = rows.loc[["q", "k", "all"], "p_ttest"].to_numpy()
    order = np.argsort(raw)
    adjusted = np.empty(3)
    adjusted[order] = np.minimum(1, np.maximum.accumulate(raw[order] * [3, 2, 1]))
    assert rows.loc[["q", "k", "all"], "p_ttest_holm"].to_numpy() == pytest.approx(adjusted)


def _truth_diff(loaded, runs, name, base="qv"):
    """Per-example differences straight from the records (seeds x examples)."""
    by = {}
    for i in runs.index:
        rec = loaded[i].record
        p = rec.predictions["test"]
        by[rec.labels.target_set, rec.labels.seed] = np.equal(p.predicted, p.labels).astype(int)
    seeds = sorted({s for t, s in by if t == name} & {s for t, s in by if t == base})
    return np.stack([by[name, s] - by[base, s] for s in seeds])


def test_difference_se_holds_seeds_and_the_set_by_example_term(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "all", "k"), seeds=range(5),
                     effects={"all": 0.04}, noise=0.01, test_size=1000, val_size=200)
    loaded, runs = load(tmp_path)
    rows = summarize(runs, loaded=loaded).set_index("target_set")
    for name in ("all", "k"):
        row, d = rows.loc[name], _truth_diff(loaded, runs, name)
        assert row["diff"] == pytest.approx(d.mean(), abs=1e-9)  # predictions = metric
        n, m = d.shape
        per_seed, cols = d.mean(axis=1), d.mean(axis=0)
        mse = np.sum((d - per_seed[:, None] - cols + d.mean()) ** 2) / ((n - 1) * (m - 1))
        se = math.sqrt(per_seed.var(ddof=1) / n + max(0, cols.var(ddof=1) - mse / n) / m)
        assert row["diff_se"] == pytest.approx(se)
        assert row["p_ttest"] == pytest.approx(2 * sps.t.sf(abs(d.mean()) / se, n - 1))
        half = sps.t.ppf(1 - (1 - row["diff_ci_level"]) / 2, n - 1) * se
        assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
            (d.mean() - half, d.mean() + half))
        assert row["diff_ci_covers"] == "seeds+test examples"
        half95 = sps.t.ppf(0.975, n - 1) * se
        assert row["diff_ci_low_per_comparison"] == pytest.approx(d.mean() - half95)
        wins, losses = (d == 1).sum(axis=1), (d == -1).sum(axis=1)
        expected = [sps.binomtest(int(w), int(w + l), 0.5).pvalue for w, l in zip(wins, losses)]
        got = [float(x.split(":")[1]) for x in row["p_mcnemar_by_seed"].split()]
        assert got == pytest.approx(expected, rel=1e-2)
        significant = np.array(expected) < 0.05
        assert row["mcnemar_seeds_better"] == int((significant & (wins > losses)).sum())
        assert row["mcnemar_seeds_worse"] == int((significant & (wins < losses)).sum())
    assert rows.loc["all", "diff_ci_low"] > 0 and rows.loc["all", "resolved"]
    assert rows.loc["all", "mcnemar_seeds_worse"] == 0
    assert rows.loc["k", "diff_ci_low"] < 0 < rows.loc["k", "diff_ci_high"]


def test_seed_status_paired_mean_and_collapsed_runs(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(4), test_size=200,
                     val_size=50)
    rng = np.random.default_rng(0)
    # q seed 3 diverged, q seed 2 collapsed, qv seed 0 failed
    for name, s, kw in (("q", 3, {"status": "diverged"}), ("q", 2, {"collapsed": True}),
                        ("qv", 0, {"status": "failed"})):
        rec = make_record(model="minilm", task="rt_sentiment", target_set=name,
                          budget="reference", scale=1.0, seed=s, accuracy=0.8,
                          history_points=3, index=100 + s, rng=rng, test_size=200,
                          val_size=50, **kw)
        folder = tmp_path / "rt_sentiment" / "scale=1.0" / f"{name}-seed{s}"
        (folder / "result.json").unlink()  # else its completed record would be the current one
        write_record(folder, rec)
    frames = record_frames(find_records(tmp_path), root=tmp_path)
    runs = frames.runs
    assert runs["collapsed"].sum() == 1 and "layers" in runs
    rows = summarize(runs, loaded=find_records(tmp_path)).set_index("target_set")
    q = rows.loc["q"]
    # A collapsed run counts with the value it reached (no survivorship), and says so.
    assert q["seeds_status"] == "3/4 completed (1 at chance: collapsed), 1 diverged"
    assert "collapsed: seed 2" in q["problem_seeds"] and "diverged: seed 3" in q["problem_seeds"]
    assert (q["n"], q["n_pairs"]) == (3, 2)  # q has seeds 0, 1, 2; qv lacks seed 0
    values = runs.set_index(["target_set", "seed"])["test/accuracy"]
    assert q["mean"] == pytest.approx((values["q", 1] + values["q", 2]) / 2)
    assert q["mean_unpaired"] == pytest.approx((values["q", 0] + values["q", 1] + values["q", 2]) / 3)
    assert "lacks seed 0" in rows.loc["qv", "baseline_note"]
    assert q["diff_ci_covers"] == "seeds+test examples"


def test_power_columns_match_noncentral_t():
    sd, n = 0.01, 5
    mde = stats.min_detectable_effect(sd, n)
    crit = sps.t.ppf(0.975, n - 1)
    nc = mde * math.sqrt(n) / sd
    assert sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8,
                                                                                      abs=1e-4)
    need = stats.seeds_needed(0.005, sd)
    power = lambda k: stats.paired_t_power(0.005, sd, k)  # noqa: E731
    assert power(need) >= 0.8 > power(need - 1)
    assert stats.seeds_needed(0.5, 1.0) == 34  # the textbook paired-t sample size for d = 0.5


def test_wilcoxon_note_below_six_pairs(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(5), test_size=0)
    rows = summarize(load(tmp_path)[1]).set_index("target_set")
    assert "cannot reach" in rows.loc["q", "wilcoxon_note"]
    assert stats.wilcoxon_note(6) == ""


def test_manifest_limits_the_statistics_to_the_sweep(tmp_path):
    paths = write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(3), test_size=0)
    write_manifest(tmp_path, [p.parent for p in paths[:-1]])
    frames = record_frames(find_records(tmp_path), root=tmp_path)
    assert len(frames.runs) == 5 and len(frames.other) == 1
    assert frames.other["path"].iloc[0] == str(paths[-1].relative_to(tmp_path))


def test_tuned_choice_is_the_argmax_of_mean_validation_metric(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q", "all"), seeds=range(4),
                     lrs=(1e-4, 1e-3, 1e-2), best_lr={"q": 1e-4, "all": 1e-2},
                     effects={"all": 0.03}, lr_penalty=0.03, test_size=400, val_size=100)
    loaded, runs = load(tmp_path)
    tuned = tuned_frame(runs, loaded=loaded).set_index("target_set")
    ok = runs[runs["status"].eq("completed") & ~runs["collapsed"]]
    means = ok.groupby(["target_set", "variant"])["val/accuracy"].mean()
    for name in ("qv", "q", "all"):
        best_variant = means[name].idxmax()
        assert best_variant == f"train.lr={tuned.loc[name, 'train.lr']:g}"
        assert tuned.loc[name, "val_mean"] == pytest.approx(means[name].max())
        chosen = ok[ok["target_set"].eq(name) & ok["variant"].eq(best_variant)]
        assert tuned.loc[name, "mean"] == pytest.approx(chosen["test/accuracy"].mean())
    assert tuned.loc["q", "train.lr"] == 1e-4 and tuned.loc["q", "edge_of_grid"]
    assert tuned.loc["qv", "train.lr"] == 1e-3 and not tuned.loc["qv", "edge_of_grid"]
    # the difference is to the baseline's own tuned result, paired by seed
    qv = ok[ok["target_set"].eq("qv") & ok["variant"].eq("train.lr=0.001")].set_index("seed")
    al = ok[ok["target_set"].eq("all") & ok["variant"].eq("train.lr=0.01")].set_index("seed")
    diff = (al["test/accuracy"] - qv["test/accuracy"]).mean()
    assert tuned.loc["all", "diff"] == pytest.approx(diff)
    assert tuned.loc["all", "diff_ci_covers"] == "seeds+test examples"


NUMBER = r"[+-]?\d+\.\d{3}|<0\.001|n/a"
COMPARISON = re.compile(
    rf"(\w+) vs (\w+): ({NUMBER}) \(interval ({NUMBER}) to ({NUMBER}) at (\d+\.\d\d)%, over "
    rf"([a-z+ ]+); Holm p ({NUMBER}); (\d+) paired seeds\)(?:, about (\d+) paired seeds would "
    rf"resolve the observed difference at the family level)?")


def test_verdict_numbers_come_from_the_summary(tmp_path):
    write_fake_sweep(tmp_path, target_sets=("qv", "q", "k", "all"), seeds=range(5),
                     effects={"all": 0.08, "q": -0.002}, noise=0.01, fail_rate=0.1,
                     test_size=500, val_size=100)
    loaded, runs = load(tmp_path)
    summary = summarize(runs, loaded=loaded)
    (verdict,) = verdicts(summary)
    rows = summary.set_index("target_set")
    found = COMPARISON.findall(verdict.text)
    assert {f[0] for f in found} == {"q", "k", "all"}
    p = lambda x: "<0.001" if x < 0.001 else f"{x:.3f}"  # noqa: E731
    for name, base, diff, low, high, level, covers, holm_p, pairs, need in found:
        row = rows.loc[name]
        assert base == "qv" and diff == f"{row['diff']:+.3f}"
        assert (low, high) == (f"{row['diff_ci_low']:+.3f}", f"{row['diff_ci_high']:+.3f}")
        assert level == f"{100 * row['diff_ci_level']:.2f}"
        assert covers == row["diff_ci_covers"] and holm_p == p(row["p_ttest_holm"])
        assert int(pairs) == row["n_pairs"]
        if need:
            assert int(need) == row["seeds_needed_observed"] and not row["resolved"]
            assert int(need) > row["n_pairs"]
    assert "Resolved against the baseline" in verdict.text and "all vs qv" in verdict.text.split(
        "Not resolved")[0]
    top = rows[rows["rank"].eq(1)].index[0]
    assert f"{top}, mean {rows.loc[top, 'mean_common']:.3f} over the" in verdict.text
    assert "one task only" in verdict.text
    assert not set("*|`[]") & set(verdict.text)


def test_records_written_twice_supersede_the_older(tmp_path):
    rng = np.random.default_rng(0)
    for acc in (0.7, 0.9):
        rec = make_record(model="m", task="t", target_set="qv", budget="reference", scale=1.0,
                          seed=0, accuracy=acc, history_points=3, index=int(acc * 10), rng=rng,
                          test_size=0)
        write_record(tmp_path / "cell", rec)
    frames = record_frames(find_records(tmp_path), root=tmp_path)
    assert len(frames.runs) == 1 and len(frames.superseded) == 1
    assert frames.runs["path"].iloc[0] == "cell/result.json"
    assert json.loads((tmp_path / "cell" / "result.json").read_text())["metrics"][
        "test/accuracy"] == frames.runs["test/accuracy"].iloc[0]
    assert isinstance(frames.superseded, pd.DataFrame)


def _write(root, name, seed, accuracy, *, lr=None, status="completed", val=None, size=0, index=0):
    rng = np.random.default_rng(index)
    record = make_record(model="m", task="t", target_set=name, budget="reference", scale=1.0,
                         seed=seed, accuracy=accuracy, history_points=3, index=index, rng=rng,
                         status=status, lr=lr, test_size=size, val_size=size // 4)
    folder = root / f"{name}-{lr}-{seed}"
    write_record(folder, record)
    if val is not None and status == "completed":  # an exact validation value
        path = folder / "result.json"
        data = json.loads(path.read_text())
        data["metrics"]["val/accuracy"] = val
        path.write_text(json.dumps(data))


def test_exact_cancellations_give_a_report_not_a_crash(tmp_path):
    base = np.array([1600, 1580, 1620, 1590, 1610])
    for s, (b, d) in enumerate(zip(base, (9, 51, 33, -74, -19))):
        _write(tmp_path, "qv", s, b / 2000, size=2000, index=2 * s)
        _write(tmp_path, "q", s, (b + d) / 2000, size=2000, index=2 * s + 1)
    loaded, runs = load(tmp_path)
    summary = summarize(runs, loaded=loaded)
    q = summary.set_index("target_set").loc["q"]
    assert abs(q["diff"]) < 1e-12 and not q["resolved"]
    assert pd.isna(q["seeds_needed_observed"]) and "0" in q["seeds_needed_observed_note"]
    (verdict,) = verdicts(summary)
    assert "q vs qv" in verdict.text and "nan" not in verdict.text


def test_a_set_with_a_diverged_seed_is_not_best_over_a_baseline_it_trails(tmp_path):
    qv = [0.80, 0.81, 0.82, 0.79, 0.70]  # seed 4 is the baseline's worst
    for s, acc in enumerate(qv):
        _write(tmp_path, "qv", s, acc, index=2 * s)
        _write(tmp_path, "all", s, acc - 0.014, index=2 * s + 1,
               status="diverged" if s == 4 else "completed")
    loaded, runs = load(tmp_path)
    summary = summarize(runs, loaded=loaded)
    rows = summary.set_index("target_set")
    assert rows.loc["all", "mean_unpaired"] > rows.loc["qv", "mean_unpaired"]  # the trap
    assert rows.loc["qv", "rank"] == 1 and rows.loc["all", "rank"] == 2
    assert rows.loc["qv", "n_common"] == 4
    (verdict,) = verdicts(summary)
    best = verdict.text.split("Resolved against")[0]
    assert "all has the highest" not in best
    assert "Best on test/accuracy (higher is better): all" not in best
    assert "qv" in best


def test_tuning_never_picks_a_value_most_of_whose_seeds_diverged(tmp_path):
    for s in range(5):
        _write(tmp_path, "qv", s, 0.80, lr=1e-3, val=0.80 + 0.001 * s, index=100 + s)
        _write(tmp_path, "q", s, 0.78, lr=1e-3, val=0.78, index=200 + s)
        # lr 1e-2: four seeds diverge, the lucky survivor has the best validation of all
        _write(tmp_path, "q", s, 0.85, lr=1e-2, val=0.86, index=300 + s,
               status="completed" if s == 0 else "diverged")
        _write(tmp_path, "q", s, 0.70, lr=1e-4, val=0.70, index=400 + s)
    loaded, runs = load(tmp_path)
    frame = tuned_frame(runs, loaded=loaded)
    tuned = frame.set_index("target_set")
    assert tuned.loc["q", "train.lr"] == 1e-3
    assert tuned.loc["q", "val_seeds"] == 5 and tuned.loc["q", "n_lost"] == 0
    (verdict,) = verdicts(summarize(runs, loaded=loaded).query("variant == 'train.lr=0.001'"),
                          frame)
    assert "selection bias" in verdict.text and "q at train.lr 0.001 (n 5)" in verdict.text


def test_exact_validation_ties_go_to_the_interior_and_are_said(tmp_path):
    for lr in (1e-4, 1e-3, 1e-2):
        for s in range(3):
            _write(tmp_path, "qv", s, 0.8, lr=lr, val=0.8 if lr != 1e-4 else 0.79,
                   index=int(lr * 1e5) + s)
            _write(tmp_path, "q", s, 0.8, lr=lr, val=0.75, index=int(lr * 1e5) + 10 + s)
    loaded, runs = load(tmp_path)
    tuned = tuned_frame(runs, loaded=loaded).set_index("target_set")
    assert tuned.loc["q", "train.lr"] == 1e-3 and not tuned.loc["q", "edge_of_grid"]
    assert "tied on validation" in tuned.loc["q", "tie_note"]
    # qv ties at 1e-3 and 1e-2: the more interior of the two
    assert tuned.loc["qv", "train.lr"] == 1e-3
    assert "0.001" in tuned.loc["qv", "tie_note"] and "0.01" in tuned.loc["qv", "tie_note"]


def test_tuning_on_a_key_the_sweep_does_not_vary_is_an_error(tmp_path):
    for s in range(3):
        _write(tmp_path, "qv", s, 0.80, lr=1e-3, val=0.80, index=100 + s)
        _write(tmp_path, "q", s, 0.78, lr=1e-3, val=0.78, index=200 + s)
    loaded, runs = load(tmp_path)
    with pytest.raises(ConfigError, match=r"train.lr has one value \(0.001\)"):
        tuned_frame(runs, loaded=loaded)


def test_report_confidence_sets_the_level_of_resolved_too(tmp_path):
    """One knob: report.confidence 0.99 tests the family at α = 0.01 (as an adaptive design's
    stages do), so a comparison with Holm p ≈ 0.027 is resolved at 0.95 and not at 0.99."""
    diffs = np.array([0.01, -0.002, 0.006, 0.012, 0.001, 0.009, 0.003, 0.005])
    rng = np.random.default_rng(0)
    for s, d in enumerate(diffs):
        base = 0.7 + 0.013 * s
        for name, acc in (("qv", base), ("k", base + d), ("v", base)):
            write_record(tmp_path / f"{name}-{s}", make_record(
                model="m", task="t", target_set=name, budget="reference", scale=1.0, seed=s,
                accuracy=acc, history_points=3, index=s, rng=rng, test_size=0))
    loaded, runs = load(tmp_path)
    holm_p = min(1.0, 2 * sps.ttest_1samp(diffs, 0).pvalue)  # v's p is 1: k is Holm's first step
    assert 0.01 < holm_p < 0.05
    for confidence, resolved in ((0.95, True), (0.99, False)):
        k = summarize(runs, loaded=loaded, confidence=confidence).set_index("target_set").loc["k"]
        assert k["p_ttest_holm"] == pytest.approx(holm_p, rel=1e-3)
        assert bool(k["resolved"]) is resolved
        assert bool(k["diff_ci_low"] > 0) is resolved  # the interval agrees with "resolved"


def test_a_loss_ranks_lowest_first_and_the_verdict_says_lower_loss_is_better(tmp_path):
    """test/loss (1.2 − accuracy in the fake records): k's loss is lower than qv's on every
    seed by a varying amount, so k ranks first, is resolved and the verdict calls the lower
    loss better; the accuracy view of the same runs calls the same difference higher."""
    diffs = np.array([0.03, 0.05, 0.04, 0.06, 0.035, 0.045, 0.05, 0.04])  # accuracy gains of k
    rng = np.random.default_rng(1)
    for s, d in enumerate(diffs):
        base = 0.7 + 0.013 * s
        for name, acc in (("qv", base), ("k", base + d), ("v", base - 0.002 * (s % 3))):
            write_record(tmp_path / f"{name}-{s}", make_record(
                model="m", task="t", target_set=name, budget="reference", scale=1.0, seed=s,
                accuracy=acc, history_points=3, index=s, rng=rng, test_size=0))
    loaded, runs = load(tmp_path)
    summary = summarize(runs, loaded=loaded, metric="test/loss")
    rows = summary.set_index("target_set")
    assert rows.loc["k", "rank"] == 1 and rows.loc["k", "diff"] == pytest.approx(-diffs.mean())
    assert rows.loc["k", "resolved"]
    (verdict,) = verdicts(summary)
    assert re.search(r"k vs qv: -0\.0\d\d \([^)]*\), lower loss by 0\.0\d\d \(test/loss\): better",
                     verdict.text)
    (accuracy_verdict,) = verdicts(summarize(runs, loaded=loaded, metric="test/accuracy"))
    assert re.search(r"k vs qv: \+0\.0\d\d \([^)]*\), higher accuracy by 0\.0\d\d \(test/accuracy\): "
                     r"better",
                     accuracy_verdict.text)
