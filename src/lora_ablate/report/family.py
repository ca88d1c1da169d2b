"""The one procedure every conclusion of a group comes from: each candidate target set's
paired difference to the baseline, tested by t and decided by Holm's step-down over the
group's family, with the interval printed beside it at the level of its Holm step.

Per comparison the per-example differences D[s, i] (seeds × test examples; correctness
differences in {−1, 0, 1} for accuracy, or any real per-example metric) give

    Var(mean) = s_d²/n + max(0, var_i(D̄[·, i]) − MSE/n) / m,

with s_d² the variance over seeds of the per-seed differences, D̄[·, i] the per-example means
over seeds and MSE the two-way residual mean square Σ(D − row − col + grand)²/((n−1)(m−1)):
the seed term (which holds the run × example noise once) and the set × example term once
each. Without per-example data it is s_d²/n. The t statistic has n − 1 degrees of freedom,
conservative when the example term dominates.

Holm: sort the family's p ascending (untestable members count as p = 1); step j has level
γ_j = α/(m − j + 1). The interval of the comparison at step j is mean ± t_{1−γ_j/2, n−1}·SE for
the steps up to and including the first step that is not rejected, and at that step's level
for every later one. A step is rejected when its interval excludes 0, so "resolved" and
"the printed interval excludes 0" are the same fact for every input.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

COVERS_SEEDS = "seeds"
COVERS_BOTH = "seeds+test examples"
RELATIVE_ZERO = 1e-9  # differences this close (relative to their size) count as equal


@dataclass(frozen=True)
class PairedDifference:
    """One comparison (candidate − baseline) over its paired seeds.

    `seed_var` is s_d², the variance over seeds of the per-seed differences; `example_var`
    the estimated set × example variance component (0 without per-example data), which
    with `n_examples` gives the part of the variance more seeds cannot remove."""

    target_set: str
    n_seeds: int
    mean: float
    se: float  # NaN when the comparison cannot be tested
    seed_var: float
    example_var: float = 0.0
    n_examples: int = 0
    covers: str = COVERS_SEEDS
    note: str = ""  # why it is not testable, or that it is a tie

    @property
    def df(self) -> int:
        return self.n_seeds - 1

    @property
    def tie(self) -> bool:
        return self.mean == 0.0 and self.se == 0.0

    @property
    def testable(self) -> bool:
        return self.tie or (self.n_seeds >= 2 and math.isfinite(self.mean)
                            and math.isfinite(self.se) and self.se > 0)

    def se_at(self, seeds: int) -> float:
        """The standard error this comparison would have with `seeds` paired seeds at the
        spreads estimated now."""
        term = self.example_var / self.n_examples if self.n_examples else 0.0
        return math.sqrt(self.seed_var / seeds + term)


def _spread_free(values: np.ndarray) -> bool:
    scale = max(1.0, float(np.max(np.abs(values))))
    return float(np.ptp(values)) <= RELATIVE_ZERO * scale


def example_component(per_example: np.ndarray) -> float:
    """max(0, var_i(D̄[·, i]) − MSE/n): the set × example variance component of a (seeds ×
    examples) matrix of per-example differences, by the two-way sums of squares."""
    d = np.asarray(per_example, dtype=np.float64)
    n, m = d.shape
    if n < 2 or m < 2:
        return 0.0
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    grand = float(rows.mean())
    total = float(np.sum((d - grand) ** 2))
    residual = total - m * float(np.sum((rows - grand) ** 2)) - n * float(np.sum((cols - grand) ** 2))
    mse = max(0.0, residual) / ((n - 1) * (m - 1))
    return max(0.0, float(cols.var(ddof=1)) - mse / n)


def paired_difference(target_set: str, per_seed: Sequence[float],
                      per_example: np.ndarray | None = None) -> PairedDifference:
    """The comparison's estimate from its per-seed differences (candidate − baseline, in
    seed order) and, where there are any, the per-example differences (a seeds × examples
    array whose rows belong to the same seeds). The mean is that of `per_seed` (the metric
    as recorded); the examples only add their variance component."""
    d = np.asarray(per_seed, dtype=np.float64)
    n = len(d)
    if n == 0 or not np.all(np.isfinite(d)):
        note = "not testable: no paired seeds" if n == 0 else "not testable: a value is not finite"
        return PairedDifference(target_set, n, math.nan if n == 0 else float(np.mean(d)),
                                math.nan, math.nan, note=note)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(target_set, n, mean, math.nan, math.nan,
                                note="not testable: 1 paired seed")
    has_examples = per_example is not None and np.ndim(per_example) == 2 \
        and np.shape(per_example)[0] == n and np.shape(per_example)[1] > 0
    covers = COVERS_BOTH if has_examples else COVERS_SEEDS
    if not np.any(d) and (not has_examples or not np.any(per_example)):
        return PairedDifference(target_set, n, 0.0, 0.0, 0.0, covers=covers,
                                note="tie: identical to the baseline on every seed")
    seed_var = 0.0 if _spread_free(d) else float(d.var(ddof=1))
    example_var = example_component(per_example) if has_examples else 0.0
    m = int(np.shape(per_example)[1]) if has_examples else 0
    diff = PairedDifference(target_set, n, mean, math.nan, seed_var, example_var, m, covers)
    se = diff.se_at(n)
    if not se > 0:
        return PairedDifference(target_set, n, mean, math.nan, seed_var, example_var, m, covers,
                                note="not testable: the paired differences are the same on "
                                     "every seed (zero variance)")
    return PairedDifference(target_set, n, mean, se, seed_var, example_var, m, covers)


@dataclass(frozen=True)
class FamilyResult:
    """One comparison's conclusion. `level` is the Holm level γ its interval is printed at
    (confidence 1 − γ); `ci_*_per_comparison` is the plain 1 − α interval, for reference."""

    target_set: str
    mean: float
    se: float
    n_seeds: int
    p: float  # two-sided t p, NaN when not testable (it counts as 1 in the family)
    p_holm: float
    step: int  # 1-based position in Holm's order
    level: float
    ci_low: float
    ci_high: float
    resolved: bool
    ci_low_per_comparison: float
    ci_high_per_comparison: float


def t_pvalue(diff: PairedDifference) -> float:
    if not diff.testable:
        return math.nan
    if diff.tie:
        return 1.0
    return float(2 * special.stdtr(diff.df, -abs(diff.mean) / diff.se))  # Student t tail


def interval(diff: PairedDifference, level: float) -> tuple[float, float]:
    """mean ± t_{1−level/2, n−1}·SE; a tie is [0, 0]; NaN when not testable."""
    if not diff.testable:
        return math.nan, math.nan
    if diff.tie:
        return 0.0, 0.0
    half = float(special.stdtrit(diff.df, 1 - level / 2)) * diff.se  # Student t quantile
    return diff.mean - half, diff.mean + half


def excludes_zero(low: float, high: float) -> bool:
    return bool(low > 0 or high < 0)  # False for NaN


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p over the whole family, NaN members counting as p = 1 (they keep a
    NaN adjusted p)."""
    filled = np.where(np.isnan(p), 1.0, p)
    m = len(filled)
    order = np.argsort(filled, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * filled[order]))
    return np.where(np.isnan(p), np.nan, adjusted)


def family_test(diffs: Sequence[PairedDifference], alpha: float = 0.05) -> list[FamilyResult]:
    """Holm's step-down over `diffs` (the whole family: untestable members count as
    p = 1) with each comparison's interval at its step's level; results in input order."""
    if not 0 < alpha < 1:
        raise ValueError(f"The family-wise error level alpha must lie strictly between 0 and "
                         f"1; got {alpha!r}.")
    m = len(diffs)
    p = np.array([t_pvalue(d) for d in diffs], dtype=float)
    order = np.argsort(np.where(np.isnan(p), 1.0, p), kind="stable")
    adjusted = holm_adjusted(p)
    out: list[FamilyResult | None] = [None] * m
    stopped_at: float | None = None  # the level of the first step that is not rejected
    for step, index in enumerate(order, start=1):
        diff = diffs[index]
        level = alpha / (m - step + 1) if stopped_at is None else stopped_at
        low, high = interval(diff, level)
        resolved = stopped_at is None and excludes_zero(low, high)
        if stopped_at is None and not resolved:
            stopped_at = level
        elif not resolved and excludes_zero(low, high):
            # After the stop only a p equal to the stopping one up to rounding can reach
            # here; its interval is widened to touch 0 so that it reads as unresolved.
            low, high = (0.0, high) if low > 0 else (low, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            plain = interval(diff, alpha)
        out[index] = FamilyResult(diff.target_set, diff.mean, diff.se, diff.n_seeds,
                                  float(p[index]), float(adjusted[index]), step, level, low,
                                  high, resolved, *plain)
    return [r for r in out if r is not None]
