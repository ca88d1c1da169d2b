"""One group's comparison: every target set against the group's baseline, paired by seed.

Shared by the plain summary and the tuned comparison, so both report the same statistics:
the mean over the seeds shared with the baseline (and the unpaired mean beside it), the
t-interval over seeds, and the family procedure (family.py): the paired difference with
its SE (seeds, plus the set × example term where per-example predictions exist), its t p,
Holm over every non-baseline target set of the group, and the interval at the level of
its Holm step, so that the interval excludes 0 exactly when the row is resolved. Beside
them: sign-flip and Wilcoxon p, McNemar per seed by direction, family-level planning, and
ranks over the seeds every target set of the group shares.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lora_ablate.report import planning, stats
from lora_ablate.report.examples import Correctness
from lora_ablate.report.family import COVERS_BOTH, COVERS_SEEDS, PairedDifference, \
    family_test, paired_difference

RESOLVE_EFFECT = 0.01  # the difference `seeds_needed` is planned for: one point of accuracy
__all__ = ["COVERS_BOTH", "COVERS_SEEDS", "COLUMNS", "Settings", "compare_group"]
RANK_PVALUES = ("p_signflip", "p_wilcoxon")
COLUMNS = (
    "target_set", "n", "mean_unpaired", "mean", "std", "ci_low", "ci_high", "ci_half",
    "ci_covers", "n_common", "mean_common", "rank", "rank_tied", "baseline", "n_pairs", "diff",
    "diff_std", "diff_se", "diff_ci_low", "diff_ci_high", "diff_ci_level", "diff_ci_covers",
    "diff_ci_method", "diff_ci_low_per_comparison", "diff_ci_high_per_comparison",
    "p_ttest", "p_ttest_holm", "holm_step", "significant", "resolved", "testable", "test_note",
    "p_signflip", "p_signflip_holm", "p_wilcoxon", "p_wilcoxon_holm", "wilcoxon_note",
    "rank_tests_can_reach_alpha", "p_mcnemar_by_seed", "mcnemar_seeds_better",
    "mcnemar_seeds_worse", "mde", "seeds_needed", "seeds_needed_note",
    "seeds_needed_observed", "seeds_needed_observed_note",
)


@dataclass(frozen=True)
class Settings:
    confidence: float = 0.95  # of the means' t-intervals; differences use alpha and Holm
    alpha: float = 0.05
    higher_is_better: bool = True
    effect: float = RESOLVE_EFFECT


def _mean_stats(values: np.ndarray, confidence: float) -> dict[str, Any]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n >= 2 else math.nan
    half = float(stats.t_half_width(std, n, confidence)) if n >= 2 else math.nan
    return {"mean": mean, "std": std, "ci_half": half, "ci_low": mean - half,
            "ci_high": mean + half, "ci_covers": COVERS_SEEDS}


def rank_tests_can_reach(n_pairs: int, family_size: int, alpha: float) -> bool:
    """Whether an exact sign-flip or signed-rank p could be Holm-significant: the smallest
    two-sided p with n pairs is 2/2**n, and Holm multiplies the smallest p by m."""
    return n_pairs >= 1 and family_size * 2.0 / 2.0 ** n_pairs < alpha


def _pairs(cell: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    return cell.merge(base, on="seed", suffixes=("", "_base")).sort_values("seed")


def _per_example(pairs: pd.DataFrame, correct: Correctness | None) -> np.ndarray | None:
    runs, base_runs = pairs["run"].to_numpy(), pairs["run_base"].to_numpy()
    if correct is None or not len(pairs) or not correct.pairable([*runs, *base_runs]):
        return None
    return np.stack([correct.by_run[a].astype(np.int8) - correct.by_run[b].astype(np.int8)
                     for a, b in zip(runs, base_runs)])


def _mcnemar(pairs: pd.DataFrame, d: np.ndarray, alpha: float) -> dict[str, Any]:
    wins, losses = (d == 1).sum(axis=1), (d == -1).sum(axis=1)
    p = stats.mcnemar_exact(wins, losses)
    return {"p_mcnemar_by_seed": " ".join(f"{int(s)}:{v:.3g}" for s, v in zip(pairs["seed"], p)),
            "mcnemar_seeds_better": int(((p < alpha) & (wins > losses)).sum()),
            "mcnemar_seeds_worse": int(((p < alpha) & (wins < losses)).sum())}


def _seed_row(pairs: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    diffs = (pairs["value"] - pairs["value_base"]).to_numpy(dtype=float)
    tests = stats.seed_tests(diffs, settings.confidence)
    row = {k: tests[k] for k in ("n_pairs", "diff_std", "p_signflip", "p_wilcoxon")}
    row.update(_mean_stats(pairs["value"].to_numpy(dtype=float), settings.confidence),
               wilcoxon_note=stats.wilcoxon_note(len(pairs), settings.alpha),
               p_mcnemar_by_seed="", mcnemar_seeds_better=pd.NA, mcnemar_seeds_worse=pd.NA)
    return row


def _family_columns(diff: PairedDifference, result: Any, family_size: int,
                    settings: Settings) -> dict[str, Any]:
    method = (f"t over {diff.n_seeds} seeds ({diff.df} df), SE with the set × example term"
              if diff.covers == COVERS_BOTH else f"paired t over {diff.n_seeds} seeds")
    out = {"diff": diff.mean, "diff_se": diff.se, "diff_ci_covers": diff.covers,
           "p_ttest": result.p, "p_ttest_holm": result.p_holm, "holm_step": result.step,
           "diff_ci_low": result.ci_low, "diff_ci_high": result.ci_high,
           "diff_ci_level": 1 - result.level,
           "diff_ci_method": f"{method}, at Holm step {result.step} of {family_size} "
                             f"(level {result.level:.3g})",
           "diff_ci_low_per_comparison": result.ci_low_per_comparison,
           "diff_ci_high_per_comparison": result.ci_high_per_comparison,
           "resolved": result.resolved, "significant": result.resolved,
           "testable": diff.testable, "test_note": diff.note}
    made = planning.plan(diff, alpha=settings.alpha, family_size=family_size,
                         effect=settings.effect, resolved=result.resolved)
    out.update(mde=made.mde, seeds_needed=made.effect.seeds, seeds_needed_note=made.effect.note,
               seeds_needed_observed=made.observed.seeds,
               seeds_needed_observed_note=made.observed.note)
    return out


def _ranks(values: pd.DataFrame, names: list[str], settings: Settings) -> pd.DataFrame:
    """Mean over the seeds every target set of the group completed (so ranks compare
    paired differences), its rank (ties share the best rank) and whether it is tied."""
    finite = values[np.isfinite(values["value"].to_numpy(dtype=float))]
    seeds = set(finite["seed"])
    for name in names:
        seeds &= set(finite.loc[finite["target_set"].eq(name), "seed"])
    common = finite[finite["seed"].isin(seeds)]
    means = common.groupby("target_set")["value"].mean().reindex(names)
    # equal up to float rounding (k/2000 sums) is a tie
    rounded = means.round(12)
    rank = rounded.rank(ascending=not settings.higher_is_better, method="min")
    tied = rank.map(rank.value_counts()).gt(1) & rank.notna()
    return pd.DataFrame({"target_set": names, "n_common": len(seeds),
                         "mean_common": means.to_numpy(), "rank": rank.to_numpy(),
                         "rank_tied": tied.to_numpy()})


def compare_group(values: pd.DataFrame, baseline: str,
                  correct: Correctness | None = None,
                  settings: Settings = Settings()) -> pd.DataFrame:
    """`values`: one row per usable run of the group with columns target_set, seed, value
    and run (its index in the runs frame, which keys `correct`). One row per target set
    (COLUMNS); the baseline's row has its own statistics and no tests."""
    values = values[np.isfinite(values["value"].to_numpy(dtype=float))]
    base = values.loc[values["target_set"].eq(baseline), ["seed", "value", "run"]]
    names = list(dict.fromkeys(values["target_set"]))
    others = [name for name in names if name != baseline]
    rows, diffs = {}, {}
    for name, cell in values.groupby("target_set", sort=False):
        own = cell["value"].to_numpy(dtype=float)
        if name == baseline:
            row = {**_mean_stats(own, settings.confidence), "n_pairs": len(own), "diff": 0.0,
                   "test_note": "baseline", "testable": False}
        else:
            pairs = _pairs(cell[["seed", "value", "run"]], base)
            row = _seed_row(pairs, settings)
            d = _per_example(pairs, correct)
            if d is not None:
                row.update(_mcnemar(pairs, d, settings.alpha))
            diffs[name] = paired_difference(
                name, (pairs["value"] - pairs["value_base"]).to_numpy(dtype=float), d)
        rows[name] = {**row, "target_set": name, "n": len(own),
                      "mean_unpaired": float(own.mean()) if len(own) else math.nan,
                      "baseline": baseline}
    results = family_test([diffs[name] for name in others], settings.alpha)
    for name, result in zip(others, results):
        rows[name].update(_family_columns(diffs[name], result, len(others), settings))
    table = pd.DataFrame([rows[name] for name in names]).reindex(columns=list(COLUMNS))
    table = table.drop(columns=["n_common", "mean_common", "rank", "rank_tied"]).merge(
        _ranks(values, names, settings), on="target_set", how="left")
    is_other = table["target_set"].ne(baseline)
    reach = table["n_pairs"].map(lambda k: rank_tests_can_reach(
        int(k) if pd.notna(k) else 0, len(others), settings.alpha))
    table["rank_tests_can_reach_alpha"] = reach.where(is_other, pd.NA)
    for column in RANK_PVALUES:  # the family: every non-baseline target set, untestable ones too
        table[f"{column}_holm"] = np.nan
        if is_other.any():
            table.loc[is_other, f"{column}_holm"] = stats.holm_family(
                table.loc[is_other, column].to_numpy(dtype=float))
    table["significant"] = table["resolved"].fillna(False).astype(bool) & is_other
    table["resolved"] = table["significant"]
    return table.reindex(columns=list(COLUMNS))
