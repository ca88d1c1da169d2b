"""One group's comparison: every target set against the group's baseline, paired by seed.

Shared by the plain summary and the tuned comparison, so both report the same statistics:
the mean over the seeds shared with the baseline (and the unpaired mean beside it), the
t-interval over seeds, the paired difference with its interval (a hierarchical bootstrap
over seeds and test examples, widened for few seeds, where per-example predictions exist, else the t-interval over
seeds), seed-level tests Holm-adjusted over every non-baseline target set of the group,
McNemar per seed, and what it would take to resolve the difference.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lora_ablate.report import stats
from lora_ablate.report.examples import Correctness

RESOLVE_EFFECT = 0.01  # the difference `seeds_needed` is planned for: one point of accuracy
COVERS_SEEDS = "seeds"
COVERS_BOTH = "seeds+test examples"
COVERS_EXAMPLES = "test examples"  # one paired seed: only the examples can be resampled
PVALUES = ("p_ttest", "p_signflip", "p_wilcoxon")
COLUMNS = (
    "target_set", "n", "mean_unpaired", "mean", "std", "ci_low", "ci_high", "ci_half",
    "ci_covers", "rank", "baseline", "n_pairs", "diff", "diff_std", "diff_ci_low",
    "diff_ci_high", "diff_ci_covers", "diff_ci_method", "diff_t_low", "diff_t_high",
    "p_ttest", "p_ttest_holm", "significant", "resolved", "testable", "test_note",
    "p_signflip", "p_signflip_holm", "p_wilcoxon", "p_wilcoxon_holm", "wilcoxon_note",
    "p_mcnemar_by_seed", "mcnemar_seeds_below_alpha", "mde", "seeds_needed",
    "seeds_needed_observed",
)


@dataclass(frozen=True)
class Settings:
    confidence: float = 0.95
    alpha: float = 0.05
    higher_is_better: bool = True
    resamples: int = 2000
    bootstrap_seed: int = 0
    effect: float = RESOLVE_EFFECT


def _mean_stats(values: np.ndarray, confidence: float) -> dict[str, float]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n >= 2 else math.nan
    half = float(stats.t_half_width(std, n, confidence)) if n >= 2 else math.nan
    return {"mean": mean, "std": std, "ci_half": half, "ci_low": mean - half,
            "ci_high": mean + half, "ci_covers": COVERS_SEEDS}


def _example_stats(runs: np.ndarray, base_runs: np.ndarray, correct: Correctness,
                   settings: Settings, counts: dict[int, np.ndarray]) -> dict[str, Any]:
    """Bootstrap interval and per-seed McNemar p of paired per-example differences.
    `counts` holds the group's example resamples by test size, shared by its comparisons."""
    diffs = np.stack([correct.by_run[a].astype(np.int8) - correct.by_run[b].astype(np.int8)
                      for a, b in zip(runs, base_runs)])
    m = diffs.shape[1]
    if m not in counts:
        counts[m] = stats.resample_counts(settings.resamples, m, settings.bootstrap_seed + 1)
    low, high = stats.hierarchical_bootstrap(diffs, confidence=settings.confidence,
                                             seed=settings.bootstrap_seed,
                                             example_counts=counts[m])
    p = stats.mcnemar_exact((diffs == 1).sum(axis=1), (diffs == -1).sum(axis=1))
    return {"diff_ci_low": low, "diff_ci_high": high,
            "diff_ci_covers": COVERS_BOTH if len(runs) >= 2 else COVERS_EXAMPLES,
            "diff_ci_method": f"hierarchical bootstrap ({settings.resamples} resamples, widened "
                              f"×{stats.small_sample_expansion(len(runs), settings.confidence):.2f} "
                              f"for {len(runs)} seeds)",
            "p_mcnemar": p, "mcnemar_seeds_below_alpha": int((p < settings.alpha).sum())}


def _pair_row(cell: pd.DataFrame, base: pd.DataFrame, correct: Correctness | None,
              settings: Settings, counts: dict[int, np.ndarray]) -> dict[str, Any]:
    pairs = cell.merge(base, on="seed", suffixes=("", "_base")).sort_values("seed")
    diffs = (pairs["value"] - pairs["value_base"]).to_numpy(dtype=float)
    row = stats.seed_tests(diffs, settings.confidence)
    row.update(_mean_stats(pairs["value"].to_numpy(dtype=float), settings.confidence))
    row.update(diff_ci_low=row["diff_t_low"], diff_ci_high=row["diff_t_high"],
               diff_ci_covers=COVERS_SEEDS, diff_ci_method="paired t over seeds",
               wilcoxon_note=stats.wilcoxon_note(len(pairs), settings.alpha),
               p_mcnemar_by_seed="", mcnemar_seeds_below_alpha=pd.NA)
    runs, base_runs = pairs["run"].to_numpy(), pairs["run_base"].to_numpy()
    if correct is not None and correct.pairable([*runs, *base_runs]):
        extra = _example_stats(runs, base_runs, correct, settings, counts)
        p = extra.pop("p_mcnemar")
        row.update(extra, p_mcnemar_by_seed=" ".join(
            f"{int(s)}:{v:.3g}" for s, v in zip(pairs["seed"], p)))
    if row["testable"] and row["diff_std"] > 0:
        sd, n = row["diff_std"], row["n_pairs"]
        row.update(mde=stats.min_detectable_effect(sd, n, settings.alpha),
                   seeds_needed=stats.seeds_needed(settings.effect, sd, settings.alpha),
                   seeds_needed_observed=stats.seeds_needed(row["diff"], sd, settings.alpha))
    return row


def compare_group(values: pd.DataFrame, baseline: str,
                  correct: Correctness | None = None,
                  settings: Settings = Settings()) -> pd.DataFrame:
    """`values`: one row per usable run of the group with columns target_set, seed, value
    and run (its index in the runs frame, which keys `correct`). One row per target set
    (COLUMNS); the baseline's row has its own statistics and no tests."""
    base = values.loc[values["target_set"].eq(baseline), ["seed", "value", "run"]]
    rows, counts = [], {}
    for name, cell in values.groupby("target_set", sort=False):
        own = cell["value"].to_numpy(dtype=float)
        if name == baseline:
            row = {**_mean_stats(own, settings.confidence), "n_pairs": len(own), "diff": 0.0,
                   "test_note": "baseline", "testable": False}
        else:
            row = _pair_row(cell[["seed", "value", "run"]], base, correct, settings, counts)
        rows.append({**row, "target_set": name, "n": len(own),
                     "mean_unpaired": float(own.mean()) if len(own) else math.nan,
                     "baseline": baseline})
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    others = table["target_set"].ne(baseline)
    for column in PVALUES:  # the family: every non-baseline target set, untestable ones too
        table[f"{column}_holm"] = np.nan
        table.loc[others, f"{column}_holm"] = stats.holm_family(
            table.loc[others, column].to_numpy(dtype=float))
    table["significant"] = (table["p_ttest_holm"] < settings.alpha) & others
    excludes_zero = (table["diff_ci_low"] > 0) | (table["diff_ci_high"] < 0)
    table["resolved"] = table["significant"] & excludes_zero
    table["rank"] = table["mean"].rank(ascending=not settings.higher_is_better, method="min")
    return table
