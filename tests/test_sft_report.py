"""The report on SFT sweeps (issue 20 item 2): per-example values that reproduce the
recorded loss, token accuracy and exact match; comparisons paired example by example
(McNemar on 0/1 values only, perplexity on seeds only); the lowest loss ranked first, the
verdict, axes and tuning reading the metric's direction; mixed token counts not paired."""

import re
from dataclasses import fields, replace

import numpy as np
import pandas as pd
import pytest
from fake_sft import make_sft_record, write_fake_sft_sweep

from lora_ablate.records import ExampleLosses, find_records, write_record
from lora_ablate.report.compare import MCNEMAR_CONTINUOUS
from lora_ablate.report.examples import example_values
from lora_ablate.report.family import COVERS_BOTH, COVERS_SEEDS
from lora_ablate.report.plots import difference_figures
from lora_ablate.report.render import write_report
from lora_ablate.report.runs import runs_frame
from lora_ablate.report.summary import summarize
from lora_ablate.report.tuning import tuned_frame
from lora_ablate.report.verdict import verdicts

HAS_EXACT_MATCH = "exact_match" in {f.name for f in fields(ExampleLosses)}


def load(root):
    loaded = find_records(root)
    return loaded, runs_frame(loaded, root=root)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """ffn 0.1 nats below qv, q 0.1 above, on every one of five seeds (noise 0.01), each
    target set better on some examples and worse on others (a set × example term)."""
    root = tmp_path_factory.mktemp("sft")
    write_fake_sft_sweep(root, target_sets=("q", "qv", "ffn"), seeds=range(5),
                         effects={"ffn": -0.1, "q": 0.1}, interaction=0.1)
    return root


def test_per_example_values_reproduce_the_recorded_loss_and_token_accuracy(sweep):
    loaded, runs = load(sweep)
    for metric in ("test/loss", "test/token_accuracy", "val/loss"):
        values = example_values(loaded, runs.index, metric)
        assert not values.problems and len(values.by_run) == len(runs) == 15
        assert not values.binary and values.identity == "completion token counts"
        assert len(set(values.examples.values())) == 1  # one example set: every run pairs
        for i, x in values.by_run.items():
            losses = loaded[i].record.example_losses[metric.split("/")[0]]
            tokens = np.asarray(losses.tokens)
            summed = losses.nll if metric.endswith("loss") else losses.correct
            # the token-weighted metric, recomputed independently of examples.py
            assert x.mean() == pytest.approx(np.sum(summed) / tokens.sum(), rel=1e-12)
            assert x.mean() == pytest.approx(runs.loc[i, metric], rel=1e-9)
            assert len(x) == 200 and np.ptp(x) > 0
    assert example_values(loaded, runs.index, "test/perplexity") is None


def test_values_that_do_not_reproduce_the_record_are_left_out_with_the_reason(tmp_path):
    rng = np.random.default_rng(3)
    record = make_sft_record(target_set="qv", seed=0, loss=2.0, rng=rng)
    doctored = {**record.metrics, "test/loss": 2.5}  # the metric of some other evaluation
    write_record(tmp_path / "a", replace(record, metrics=doctored))
    write_record(tmp_path / "b", make_sft_record(target_set="q", seed=0, loss=2.1, rng=rng))
    loaded, runs = load(tmp_path)
    values = example_values(loaded, runs.index, "test/loss")
    bad = runs.index[runs["target_set"].eq("qv")][0]
    assert list(values.problems) == [bad] and len(values.by_run) == 1
    assert "give loss 2.0000, the record says 2.5" in values.problems[bad]


def test_sft_loss_comparisons_cover_seeds_and_examples(sweep):
    loaded, runs = load(sweep)
    summary = summarize(runs, loaded=loaded, metric="test/loss")
    rows = summary.set_index("target_set")
    for name in ("q", "ffn"):
        assert rows.loc[name, "diff_ci_covers"] == COVERS_BOTH
        assert rows.loc[name, "p_mcnemar_by_seed"] == MCNEMAR_CONTINUOUS
        assert pd.isna(rows.loc[name, "mcnemar_seeds_better"])
    assert rows.loc["ffn", "diff"] == pytest.approx(-0.1, abs=0.03)
    assert any("McNemar per seed is left out for test/loss" in n for n in summary.attrs["notes"])
    # the same runs on perplexity: no per-example values, said so, paired on seeds only
    perplexity = summarize(runs, loaded=loaded, metric="test/perplexity")
    assert set(perplexity.loc[perplexity["target_set"].ne("qv"), "diff_ci_covers"]) == {COVERS_SEEDS}
    assert any("perplexity is exp of the token-weighted mean loss" in n
               for n in perplexity.attrs["notes"])


def test_the_example_term_enters_the_se_of_a_loss_comparison(sweep):
    """With per-example values the SE adds the set × example term: larger than the
    seeds-only SE, since the sweep's target sets differ per example."""
    loaded, runs = load(sweep)
    both = summarize(runs, loaded=loaded, metric="test/loss").set_index("target_set")
    seeds = summarize(runs, loaded=None, metric="test/loss").set_index("target_set")
    assert (seeds.loc[["q", "ffn"], "diff_ci_covers"] == COVERS_SEEDS).all()
    for name in ("q", "ffn"):
        assert both.loc[name, "diff_se"] > seeds.loc[name, "diff_se"] * 1.01


def test_the_report_ranks_the_lowest_loss_first_and_speaks_of_lower_loss(sweep):
    loaded, runs = load(sweep)
    summary = summarize(runs, loaded=loaded, metric="test/loss")
    rows = summary.set_index("target_set")
    assert rows.loc["ffn", "rank"] == 1 and rows.loc["qv", "rank"] == 2 and rows.loc["q", "rank"] == 3
    assert rows.loc["ffn", "resolved"] and rows.loc["q", "resolved"]
    (verdict,) = verdicts(summary)
    assert "Best on test/loss (lower is better): ffn" in verdict.text
    assert re.search(r"ffn vs qv: -0\.\d+ \([^)]*\), lower loss by 0\.\d+ \(test/loss\): better",
                     verdict.text), verdict.text
    assert re.search(r"q vs qv: \+0\.\d+ \([^)]*\), higher loss by 0\.\d+ \(test/loss\): worse",
                     verdict.text), verdict.text
    (figure,) = difference_figures(summary)
    assert figure.axes[0].get_xlabel() == "Δ test/loss vs qv (lower is better)"


def test_write_report_on_an_sft_sweep(sweep, tmp_path):
    out = write_report(sweep, tmp_path / "report")
    text = (out / "report.md").read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["metric"]) == {"test/loss"}  # the task's configured metric
    rows = summary.set_index("target_set")
    assert rows.loc["ffn", "rank"] == 1 and rows.loc["ffn", "diff_ci_covers"] == COVERS_BOTH
    assert "lower loss by" in text and "test/loss (lower is better)" in text
    assert "it does not apply to SFT runs" in text  # the collapse rule
    assert "does not apply to SFT runs" in (out / "report.html").read_text()


def test_tuning_picks_the_lowest_validation_loss(tmp_path):
    """qv's loss is lowest at lr 1e-3 and ffn's at 1e-2 (each value on every seed): tuning
    on val/loss must choose them, and the verdict says the lowest mean wins."""
    write_fake_sft_sweep(tmp_path, target_sets=("qv", "ffn"), seeds=range(4),
                         effects={"ffn": -0.05}, lrs=(1e-3, 1e-2, 1e-1),
                         best_lr={"qv": 1e-3, "ffn": 1e-2}, size=50)
    loaded, runs = load(tmp_path)
    tuned = tuned_frame(runs, tune=("train.lr",), metric="test/loss", loaded=loaded)
    chosen = tuned.set_index("target_set")["train.lr"]
    assert chosen["qv"] == pytest.approx(1e-3) and chosen["ffn"] == pytest.approx(1e-2)
    for name, rows in runs.groupby("target_set"):  # the chosen value has the lowest mean
        means = rows.groupby(rows["variant"])["val/loss"].mean()
        assert tuned.set_index("target_set").loc[name, "val_mean"] == pytest.approx(means.min())
    summary = summarize(runs, loaded=loaded, metric="test/loss")
    verdict = next(v for v in verdicts(summary, tuned) if "Tuning" in v.text)
    assert "on val/loss (lowest mean wins)" in verdict.text


def test_runs_with_other_token_counts_are_not_paired_and_the_report_says_why(tmp_path):
    rng = np.random.default_rng(5)
    other = np.full(200, 7)  # qv's seed-2 run scored other completions
    for s in range(4):
        for name, loss in (("qv", 2.0), ("q", 2.1)):
            tokens = other if (name, s) == ("qv", 2) else None
            write_record(tmp_path / f"{name}-{s}", make_sft_record(
                target_set=name, seed=s, loss=loss + 0.01 * s + 0.005 * rng.normal(), rng=rng,
                tokens=tokens))
    loaded, runs = load(tmp_path)
    summary = summarize(runs, loaded=loaded, metric="test/loss")
    q = summary.set_index("target_set").loc["q"]
    assert q["diff_ci_covers"] == COVERS_SEEDS and q["n_pairs"] == 4
    assert any("completion token counts differ between runs of task bbc_headlines" in n
               and "not paired example by example" in n for n in summary.attrs["notes"])


@pytest.mark.skipif(not HAS_EXACT_MATCH, reason="ExampleLosses.exact_match comes with helper gen")
def test_exact_match_bits_are_binary_values_with_mcnemar(tmp_path):
    write_fake_sft_sweep(tmp_path, target_sets=("qv", "ffn"), seeds=range(3),
                         effects={"ffn": -0.3}, exact_match=True)
    loaded, runs = load(tmp_path)
    values = example_values(loaded, runs.index, "test/exact_match")
    assert values.binary and not values.problems
    for i, x in values.by_run.items():
        assert set(np.unique(x)) <= {0.0, 1.0}
        assert x.mean() == pytest.approx(runs.loc[i, "test/exact_match"], abs=1e-12)
    ffn = summarize(runs, loaded=loaded, metric="test/exact_match").set_index("target_set").loc["ffn"]
    assert ffn["diff_ci_covers"] == COVERS_BOTH and ffn["p_mcnemar_by_seed"].startswith("0:")
