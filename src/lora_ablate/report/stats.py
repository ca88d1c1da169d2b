"""Statistics of paired comparisons, as plain functions of arrays.

Seed level: the exact sign-flip permutation test and Wilcoxon's signed-rank test over the
per-seed differences of a metric (shown beside the family's t-test, family.py), with the
rule that differences of zero spread are not testable by t (never p = 0). Example level:
McNemar's exact test per seed. Planning: power of a two-sided t-test, the standardized
difference it needs, and for a paired t the minimum detectable effect and the seeds a
given difference needs (planning.py applies them at the family level).
"""

import functools
import math
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import numpy as np
from scipy import optimize, special, stats

WILCOXON_MIN_PAIRS = 6  # smallest exact two-sided signed-rank p is 2 / 2**n: 0.031 at n = 6
SIGNFLIP_EXACT_MAX = 16  # up to 2**16 sign patterns enumerated; above that, sampled
POWER = 0.8


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN entries are not comparisons and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[ok][order]))
        ranked = np.empty(m)
        ranked[order] = adjusted
        out[ok] = ranked
    return out


def holm_family(pvalues: Sequence[float]) -> np.ndarray:
    """Holm over a whole family in which some members could not be tested (NaN): they
    count as p = 1, so they still enlarge the family, and their adjusted p stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = holm(np.where(np.isnan(p), 1.0, p))
    return np.where(np.isnan(p), np.nan, adjusted)


def t_half_width(std: Any, n: Any, confidence: float) -> Any:
    """Half-width of the Student-t interval of a mean; NaN for n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = special.stdtrit(np.where(n >= 2, n - 1, np.nan), (1 + confidence) / 2)
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def is_constant(diffs: np.ndarray) -> bool:
    """Whether paired differences have no spread beyond float rounding (differences of
    metrics such as k/2000 are not exactly equal in floating point even when equal)."""
    if len(diffs) == 0:
        return True
    scale = max(1.0, float(np.max(np.abs(diffs))))
    return float(np.ptp(diffs)) <= 1e-9 * scale


def signflip_p(diffs: np.ndarray, *, samples: int = 20_000, seed: int = 0) -> float:
    """Two-sided exact permutation p of the mean paired difference under random sign flips
    (the null of exchangeable pairs): the share of the 2**n sign patterns whose |mean| is at
    least the observed one. The observed pattern counts, so with n pairs p >= 2 / 2**n for
    any nonzero data (and never 0). Above SIGNFLIP_EXACT_MAX pairs it samples patterns and
    returns (k + 1) / (samples + 1)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0 or not np.any(d):
        return math.nan if n == 0 else 1.0
    observed = abs(d.mean()) * (1 - 1e-12)  # ties with the observed pattern count as extreme
    if n <= SIGNFLIP_EXACT_MAX:
        signs = np.array(list(product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d) / n >= observed))
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(samples, n))
    hits = int(np.sum(np.abs(signs @ d) / n >= observed))
    return (hits + 1) / (samples + 1)


def rank_tests(diffs: np.ndarray) -> dict[str, Any]:
    """Sign-flip and Wilcoxon p of per-seed differences (candidate − baseline), shown beside
    the family's t-test (both exact). Identical results on every seed: p = 1."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out: dict[str, Any] = {
        "n_pairs": n, "diff_std": float(d.std(ddof=1)) if n >= 2 else math.nan,
        "p_signflip": signflip_p(d) if n else math.nan, "p_wilcoxon": math.nan}
    if n >= 2 and not np.any(d):
        out.update(p_wilcoxon=1.0, diff_std=0.0)
    elif n >= 2 and is_constant(d):
        out["diff_std"] = 0.0
    if n >= 1 and np.any(d):
        out["p_wilcoxon"] = signed_rank_p(d)
    return out


def signed_rank_p(diffs: np.ndarray) -> float:
    """Two-sided exact Wilcoxon signed-rank p (zeros dropped, tied |d| at their average
    rank): the sign-flip test of the signed ranks, whose sum is the statistic up to a
    constant."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if not len(d):
        return 1.0
    return signflip_p(np.sign(d) * stats.rankdata(np.abs(d)))


def wilcoxon_note(n_pairs: int, alpha: float = 0.05) -> str:
    if n_pairs >= WILCOXON_MIN_PAIRS:
        return ""
    return (f"{n_pairs} pairs: the exact two-sided signed-rank test cannot reach p < {alpha:g} "
            f"below {WILCOXON_MIN_PAIRS} pairs")


# ---------------------------------------------------------------- planning


def t_power(ncp: float, df: int, alpha: float) -> float:
    """Power of a two-sided t-test at level alpha with df degrees of freedom when the true
    standardized difference (mean / SE) is `ncp`."""
    crit = special.stdtrit(df, 1 - alpha / 2)
    # P(|Z + ncp| > crit * S) with S = sqrt(chi2_df / df), averaged over quantiles of S:
    # scipy's noncentral t returns NaN far in its tail, which small df reaches.
    scale = _chi_scale(df)
    return float(np.mean(special.ndtr(ncp - crit * scale) + special.ndtr(-crit * scale - ncp)))


def paired_t_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a true mean difference
    `delta` when the differences have standard deviation `sd`."""
    if n < 2 or not sd > 0:
        return math.nan
    return t_power(abs(delta) * math.sqrt(n) / sd, n - 1, alpha)


@functools.lru_cache(maxsize=256)
def _chi_scale(df: int) -> np.ndarray:
    """Quantiles of sqrt(chi2_df / df) at 4000 evenly spaced probabilities."""
    return np.sqrt(stats.chi2.ppf((np.arange(4000) + 0.5) / 4000, df) / df)


@functools.lru_cache(maxsize=4096)
def ncp_needed(df: int, alpha: float, power: float = POWER) -> float:
    """The standardized difference (mean / SE) a two-sided t-test at level alpha with df
    degrees of freedom detects with the given power."""
    high = 1.0
    while t_power(high, df, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda x: t_power(x, df, alpha) - power, 0.0, high, xtol=1e-9))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true difference the paired t-test detects with the given power at n
    pairs and spread sd; NaN when undefined (n < 2 or no spread)."""
    if n < 2 or not sd > 0 or not math.isfinite(sd):
        return math.nan
    return ncp_needed(n - 1, alpha, power) * sd / math.sqrt(n)


def seeds_needed(delta: float, sd: float, alpha: float = 0.05, power: float = POWER,
                 limit: int = 1_000_000) -> float:
    """Seeds (pairs) the paired t-test needs to detect `delta` with the given power at
    spread sd; NaN when undefined or when more than `limit` would be needed."""
    if not (sd > 0 and math.isfinite(sd) and abs(delta) > 0):
        return math.nan
    found = first_sufficient(lambda n: abs(delta) * math.sqrt(n) / sd >= ncp_needed(n - 1, alpha, power),
                             2, limit)
    return math.nan if found is None else float(found)


def first_sufficient(enough: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest n in [low, high] with enough(n), by bisection, for a condition that
    stays true once it holds; None when even `high` is not enough."""
    if low > high or not enough(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if not enough(mid) else (low, mid)
    return high


def mcnemar_exact(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Two-sided exact McNemar p per pair of runs: `wins` examples only the candidate got
    right, `losses` only the baseline got right (a binomial test of wins in wins + losses
    at 1/2). No discordant examples: p = 1."""
    wins, losses = np.asarray(wins), np.asarray(losses)
    total = wins + losses
    p = 2 * stats.binom.cdf(np.minimum(wins, losses), total, 0.5)
    return np.where(total > 0, np.minimum(1.0, p), 1.0)
