"""Planning numbers at the family level: what a comparison can detect now and how many
paired seeds would resolve a difference, both at Holm's worst-case level α/m (Bonferroni:
the level of Holm's first step, the one a single true difference in a family of m usually
meets) with the family's t-test and its SE (family.py).

More seeds shrink only the seed term of the SE; the set × example term stays, so a
difference smaller than what the test set itself can separate needs no finite number of
seeds, and says so instead of printing a sentinel.
"""

import math
from dataclasses import dataclass

from lora_ablate.report import stats
from lora_ablate.report.family import PairedDifference

SEEDS_LIMIT = 1000  # planning stops here: "more than 1000 seeds"
POWER = stats.POWER


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds that would resolve a difference, or None with `note` saying why not."""

    seeds: int | None
    note: str = ""

    def text(self) -> str:
        return str(self.seeds) if self.seeds is not None else self.note


@dataclass(frozen=True)
class Plan:
    mde: float  # the difference detectable now with power POWER at α/m
    observed: SeedsNeeded  # seeds that would resolve the observed difference
    effect: SeedsNeeded  # seeds that would resolve `effect`


def family_level(alpha: float, family_size: int) -> float:
    return alpha / max(1, family_size)


def seeds_needed(diff: PairedDifference, delta: float, level: float, *, more_than: int = 0,
                 power: float = POWER, limit: int = SEEDS_LIMIT) -> SeedsNeeded:
    """The smallest n > `more_than` (and ≥ 2) at which a t-test at `level` detects `delta`
    with `power`, at the spreads `diff` estimates."""
    if not (math.isfinite(diff.seed_var) and math.isfinite(delta)) or diff.n_seeds < 2:
        return SeedsNeeded(None, "no estimate of the spread")
    if delta == 0 or abs(delta) < 1e-12:
        return SeedsNeeded(None, "no finite number (the difference is 0)")
    if diff.se_at(10**9) == 0 and diff.seed_var == 0:
        return SeedsNeeded(None, "no estimate of the spread (zero variance)")
    low = max(2, more_than + 1)

    def enough(n: int) -> bool:
        return abs(delta) / diff.se_at(n) >= stats.ncp_needed(n - 1, level, power)

    found = stats.first_sufficient(enough, low, limit)
    if found is not None:
        return SeedsNeeded(found)
    floor = diff.se_at(10**9)
    if floor > 0 and abs(delta) / floor < stats.ncp_needed(10**6, level, power):
        return SeedsNeeded(None, "no finite number: the test set's own sampling error "
                                 "(set × example term) is too large for this difference")
    return SeedsNeeded(None, f"more than {limit}")


def plan(diff: PairedDifference, *, alpha: float, family_size: int, effect: float,
         resolved: bool, power: float = POWER) -> Plan:
    """Family-level planning for one comparison. An unresolved comparison never needs
    the seeds it already has: its search starts above them."""
    level = family_level(alpha, family_size)
    if not diff.testable or diff.tie or diff.n_seeds < 2:
        none = SeedsNeeded(None, "no estimate of the spread")
        return Plan(math.nan, none, none)
    mde = stats.ncp_needed(diff.df, level, power) * diff.se
    more_than = 0 if resolved else diff.n_seeds
    return Plan(mde, seeds_needed(diff, diff.mean, level, more_than=more_than, power=power),
                seeds_needed(diff, effect, level, power=power))
