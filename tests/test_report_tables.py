"""Summary tables render whatever columns the summary has: known ones under a header,
unknown ones under their own name; Wilcoxon only where it could reach 0.05."""

import numpy as np
import pandas as pd

from lora_ablate.report.tables import md_table, summary_tables, tuned_tables

GROUP = {"model": "m", "task": "t", "budget": "reference", "budget_scale": 1.0, "variant": ""}


def frame(n_pairs: int, **extra) -> pd.DataFrame:
    rows = [{**GROUP, "target_set": name, "metric": "test/accuracy", "baseline": "qv",
             "n": n_pairs, "n_pairs": n_pairs, "mean": mean, "ci_half": 0.01, "diff": diff,
             "diff_ci_low": diff - 0.02, "diff_ci_high": diff + 0.02, "p_ttest_holm": p,
             "p_wilcoxon_holm": p, "significant": p < 0.05, "rank": rank, **extra}
            for name, mean, diff, p, rank in (("qv", 0.80, np.nan, np.nan, 2),
                                              ("all", 0.85, 0.05, 0.01, 1))]
    return pd.DataFrame(rows)


def test_known_columns_get_headers_and_unknown_ones_keep_their_names():
    table, = summary_tables(frame(3, diff_ci_covers="seeds+test examples", mde=0.012,
                                  seeds_status="3/3 completed", brand_new_stat=1.5))
    assert table.columns[:6] == ("target set", "runs", "n", "n pairs", "mean ± CI",
                                 "Δ vs baseline [interval]")
    assert table.text_columns == 2
    assert "Δ interval covers" in table.columns and "MDE (family level)" in table.columns
    assert table.columns[-1] == "brand_new_stat"
    row = dict(zip(table.columns, (c.text for c in table.rows[1])))
    assert row["n"] == "3" and row["n pairs"] == "3" and row["brand_new_stat"] == "1.5"
    assert row["Δ vs baseline [interval]"] == "+0.050 [+0.030, +0.070]"
    assert dict(zip(table.columns, (c.text for c in table.rows[0])))["Δ vs baseline [interval]"] \
        == "baseline"
    assert "seeds+test examples" in table.caption


def test_interval_level_and_directional_mcnemar_cells():
    table, = summary_tables(frame(3, diff_ci_level=0.99375, mcnemar_seeds_better=2,
                                  mcnemar_seeds_worse=1, seeds_needed_observed=np.nan,
                                  seeds_needed_observed_note="more than 1000"))
    row = dict(zip(table.columns, (c.text for c in table.rows[1])))
    assert row["interval level"] == "99.38%"
    assert row["seeds McNemar p<0.05 better / worse"] == "2 / 1"
    assert row["seeds for observed Δ"] == "more than 1000"
    assert "excludes 0 exactly when the row is resolved" in table.caption


def test_rank_tests_hidden_where_they_cannot_reach_alpha_and_said_once():
    hidden, = summary_tables(frame(5, p_signflip_holm=0.5, rank_tests_can_reach_alpha=False))
    shown, = summary_tables(frame(8, p_signflip_holm=0.01, rank_tests_can_reach_alpha=True))
    assert "p (sign-flip, Holm)" not in hidden.columns and "cannot fall below" in hidden.caption
    assert "p (sign-flip, Holm)" in shown.columns and "cannot fall below" not in shown.caption


def test_wilcoxon_column_only_with_six_pairs_or_more():
    assert "p (Wilcoxon, Holm)" not in summary_tables(frame(5))[0].columns
    assert "p (Wilcoxon, Holm)" in summary_tables(frame(6))[0].columns


def test_single_seed_mean_says_n_1_and_markdown_marks_best_and_significant():
    table, = summary_tables(frame(1).assign(ci_half=np.nan))
    text = md_table(table)
    assert "0.800 (n=1)" in text
    assert "**0.850 (n=1)** †" in text


def test_tuned_table_shows_the_chosen_value_then_the_summary_columns():
    tuned = frame(3, **{"train.lr": 0.001, "val_mean": 0.81, "edge_of_grid": True,
                        "grid": "train.lr: 0.001, 0.01", "val_metric": "val/accuracy"})
    table, = tuned_tables(tuned, ["train.lr"])
    assert table.columns[:5] == ("target set", "train.lr", "val mean", "edge of grid", "n")
    assert "grid" not in table.columns and "val_metric" not in table.columns
    assert [c.text for c in table.rows[0][:4]] == ["qv", "0.001", "0.810", "yes"]
