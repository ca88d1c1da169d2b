"""One group's comparison: every target set against the group's baseline, paired by seed.

Shared by the plain summary and the tuned comparison, so both report the same statistics:
the mean over the seeds shared with the baseline (and the unpaired mean beside it), the
t-interval over seeds, and the family procedure (family.py): the paired difference with
its SE (seeds, plus the set × example term where per-example values exist: examples.py),
its t p, Holm over every non-baseline target set of the group, and the interval at the
level of its Holm step, so that the interval excludes 0 exactly when the row is resolved.
Beside them: sign-flip and Wilcoxon p, McNemar per seed by direction (0/1 per-example
values only), family-level planning, and ranks over the seeds every target set of the
group shares.
"""

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from lora_ablate.report import planning, stats
from lora_ablate.report.examples import ExampleValues
from lora_ablate.report.family import COVERS_BOTH, COVERS_SEEDS, PairedDifference, \
    family_test, paired_difference
from lora_ablate.report.staged import SeedPlan, staged_family

RESOLVE_EFFECT = 0.01  # the difference `seeds_needed` is planned for: one point of accuracy
MCNEMAR_CONTINUOUS = "n/a: continuous per-example values (McNemar needs 0/1)"
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
    "seeds_needed_observed", "seeds_needed_observed_note", "stage",
)


@dataclass(frozen=True)
class Settings:
    confidence: float = 0.95  # of the means' t-intervals; differences use alpha and Holm
    alpha: float = 0.05
    higher_is_better: bool = True
    effect: float = RESOLVE_EFFECT
    # The sweep's adaptive-seeds design (its manifest's); None: one stage, Holm at alpha.
    seed_plan: SeedPlan | None = None


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


@dataclass(frozen=True)
class Pairs:
    """A candidate's runs and the baseline's on the seeds both have, in seed order."""

    seeds: np.ndarray
    values: np.ndarray
    runs: np.ndarray
    base_values: np.ndarray
    base_runs: np.ndarray

    @property
    def diffs(self) -> np.ndarray:
        return self.values - self.base_values


@dataclass(frozen=True)
class SetRuns:
    """One target set's usable runs in the group, in seed order."""

    seeds: np.ndarray
    values: np.ndarray
    runs: np.ndarray


def _cells(values: pd.DataFrame) -> dict[str, SetRuns]:
    names = values["target_set"].to_numpy(dtype=object)
    seeds = values["seed"].to_numpy(dtype=np.int64)
    numbers = values["value"].to_numpy(dtype=float)
    runs = values["run"].to_numpy()
    out = {}
    for name in dict.fromkeys(names):
        rows = np.flatnonzero(names == name)
        rows = rows[np.argsort(seeds[rows], kind="stable")]
        out[name] = SetRuns(seeds[rows], numbers[rows], runs[rows])
    return out


def _pairs(cell: SetRuns, base: SetRuns) -> Pairs:
    seeds, mine, theirs = np.intersect1d(cell.seeds, base.seeds, return_indices=True)
    return Pairs(seeds, cell.values[mine], cell.runs[mine], base.values[theirs],
                 base.runs[theirs])


def _per_example(pairs: Pairs, examples: ExampleValues | None) -> np.ndarray | None:
    """The seeds × examples matrix of per-example differences (candidate − baseline), or
    None when some run of the pairs has no values over the shared examples."""
    if examples is None or not len(pairs.seeds) \
            or not examples.pairable([*pairs.runs, *pairs.base_runs]):
        return None
    value = examples.by_run
    return np.stack([np.asarray(value[a], dtype=np.float64)
                     - np.asarray(value[b], dtype=np.float64)
                     for a, b in zip(pairs.runs, pairs.base_runs)])


def _mcnemar(pairs: Pairs, d: np.ndarray, alpha: float) -> dict[str, Any]:
    """McNemar per seed on 0/1 per-example values (d in {−1, 0, 1}): the discordant
    examples won and lost, by direction."""
    wins, losses = (d == 1).sum(axis=1), (d == -1).sum(axis=1)
    p = stats.mcnemar_exact(wins, losses)
    return {"p_mcnemar_by_seed": " ".join(f"{int(s)}:{v:.3g}" for s, v in zip(pairs.seeds, p)),
            "mcnemar_seeds_better": int(((p < alpha) & (wins > losses)).sum()),
            "mcnemar_seeds_worse": int(((p < alpha) & (wins < losses)).sum())}


def _seed_row(pairs: Pairs, settings: Settings) -> dict[str, Any]:
    row = stats.rank_tests(pairs.diffs)
    row.update(_mean_stats(pairs.values, settings.confidence),
               wilcoxon_note=stats.wilcoxon_note(len(pairs.seeds), settings.alpha),
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


def _ranks(cells: dict[str, SetRuns], settings: Settings) -> dict[str, dict[str, Any]]:
    """Per target set: the mean over the seeds every target set of the group completed (so
    ranks compare paired differences), its rank (ties share the best rank) and whether it
    is tied."""
    common = functools.reduce(np.intersect1d, [c.seeds for c in cells.values()]) \
        if cells else np.array([], dtype=np.int64)
    means = np.array([c.values[np.isin(c.seeds, common)].mean() if len(common) else math.nan
                      for c in cells.values()])
    # equal up to float rounding (sums of k/2000) is a tie
    keyed = np.round(means if settings.higher_is_better else -means, 12)
    rank = np.full(len(means), math.nan)
    ok = np.isfinite(keyed)
    rank[ok] = scipy_stats.rankdata(-keyed[ok], method="min")
    tied = np.array([ok[i] and int(np.sum(rank == rank[i])) > 1 for i in range(len(rank))])
    return {name: {"n_common": len(common), "mean_common": float(mean), "rank": r,
                   "rank_tied": bool(t)}
            for name, mean, r, t in zip(cells, means, rank, tied)}


def _staged_columns(rows: dict[str, dict[str, Any]], cells: dict[str, SetRuns], base: SetRuns,
                    others: list[str], diffs: dict[str, PairedDifference],
                    examples: ExampleValues | None, settings: Settings) -> None:
    """The family under the sweep's two-stage design: stage 1 on the stage-1 seeds only,
    the final test on all seeds of the continued comparisons; each row's columns come from
    the stage that concluded it."""
    plan = settings.seed_plan
    first = {name: _stage_one_difference(name, cells[name], base, examples, plan)
             for name in others}
    staged = staged_family([first[name] for name in others], diffs, plan.design)
    for name, conclusion in zip(others, staged):
        diff = diffs[name] if conclusion.stage == 2 else first[name]
        rows[name].update(_family_columns(diff, conclusion.result, len(others), settings),
                          stage=conclusion.stage)


def _stage_one_difference(name: str, cell: SetRuns, base: SetRuns, examples: ExampleValues | None,
                          plan: SeedPlan) -> PairedDifference:
    keep = np.isin(cell.seeds, plan.stage1_seeds)
    pairs = _pairs(SetRuns(cell.seeds[keep], cell.values[keep], cell.runs[keep]), base)
    return paired_difference(name, pairs.diffs, _per_example(pairs, examples))


def compare_group(values: pd.DataFrame, baseline: str,
                  examples: ExampleValues | None = None,
                  settings: Settings = Settings()) -> pd.DataFrame:
    """`values`: one row per usable run of the group with columns target_set, seed, value
    and run (its index in the runs frame, which keys `examples`). One row per target set
    (COLUMNS); the baseline's row has its own statistics and no tests."""
    values = values[np.isfinite(values["value"].to_numpy(dtype=float))]
    cells = _cells(values)
    empty = SetRuns(np.array([], dtype=np.int64), np.array([]), np.array([], dtype=np.int64))
    base = cells.get(baseline, empty)
    others = [name for name in cells if name != baseline]
    ranks = _ranks(cells, settings)
    rows, diffs = {}, {}
    for name, cell in cells.items():
        if name == baseline:
            row = {**_mean_stats(cell.values, settings.confidence), "n_pairs": len(cell.values),
                   "diff": 0.0, "test_note": "baseline", "testable": False}
        else:
            pairs = _pairs(cell, base)
            row = _seed_row(pairs, settings)
            d = _per_example(pairs, examples)
            if d is not None and examples.binary:
                row.update(_mcnemar(pairs, d, settings.alpha))
            elif d is not None:
                row["p_mcnemar_by_seed"] = MCNEMAR_CONTINUOUS
            diffs[name] = paired_difference(name, pairs.diffs, d)
            row["rank_tests_can_reach_alpha"] = rank_tests_can_reach(
                len(pairs.seeds), len(others), settings.alpha)
        rows[name] = {**row, **ranks[name], "target_set": name, "n": len(cell.values),
                      "mean_unpaired": float(cell.values.mean()) if len(cell.values) else math.nan,
                      "baseline": baseline}
    if settings.seed_plan is None:
        results = family_test([diffs[name] for name in others], settings.alpha)
        for name, result in zip(others, results):
            rows[name].update(_family_columns(diffs[name], result, len(others), settings))
    else:
        _staged_columns(rows, cells, base, others, diffs, examples, settings)
    for column in RANK_PVALUES:  # the family: every non-baseline target set, untestable ones too
        adjusted = stats.holm_family([rows[name][column] for name in others])
        for name, p in zip(others, adjusted):
            rows[name][f"{column}_holm"] = p
    for name in cells:  # the baseline is never resolved against itself
        rows[name]["significant"] = rows[name]["resolved"] = bool(rows[name].get("resolved"))
    return pd.DataFrame([rows[name] for name in cells], columns=list(COLUMNS))
