"""Synthetic sweeps for the simulation suite: per-example correctness from a latent model,
fed to the report's own family procedure (family.py, staged.py).

Run s of target set t gets example i right when

    μ + δ_t + a_s + v_{t,s} + γ_{t,i} − b_i + ε_{t,s,i} > 0,

with example difficulty b_i ~ N(0, DIFFICULTY²), a seed effect a_s shared by every target set
of the seed, set × seed noise v, a set × example term γ (a target set better on some
sentences), and run × example noise ε ~ N(0, 1). Every term is normal, so the population
accuracy of a target set is Φ((μ + δ_t)/τ) with τ² the sum of the variances: the true
difference a comparison estimates is known exactly. Effects and the seed spread are given
in accuracy points and converted to the latent scale here.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from lora_ablate.report.family import FamilyResult, family_test, paired_difference
from lora_ablate.report.staged import StagedDesign, staged_family

DIFFICULTY = 2.0  # runs agree on most examples, as real ones do
SEED_SHARED = 0.3


@dataclass(frozen=True)
class Scenario:
    """A family of `len(effects)` candidates against one baseline; effects and seed_sd in
    accuracy points (seed_sd: of one target set's seed-to-seed noise, so the per-seed
    difference of two sets spreads by about √2 · seed_sd plus the test examples' part)."""

    effects: tuple[float, ...]
    seed_sd: float
    interaction: float = 0.0  # sd of γ on the latent scale
    seeds: int = 5
    examples: int = 2000
    accuracy: float = 0.8

    @property
    def tau(self) -> float:
        return math.sqrt(DIFFICULTY ** 2 + SEED_SHARED ** 2 + self._v ** 2
                         + self.interaction ** 2 + 1.0)

    @property
    def _v(self) -> float:
        # slope of accuracy in the latent shift, at the baseline's accuracy
        rest = math.sqrt(DIFFICULTY ** 2 + SEED_SHARED ** 2 + self.interaction ** 2 + 1.0)
        slope = stats.norm.pdf(stats.norm.ppf(self.accuracy)) / rest
        return self.seed_sd / 100 / slope

    @property
    def mu(self) -> float:
        return self.tau * float(stats.norm.ppf(self.accuracy))

    def deltas(self) -> np.ndarray:
        """Latent shifts that give each candidate its effect in population accuracy."""
        target = np.clip(self.accuracy + np.asarray(self.effects) / 100, 1e-6, 1 - 1e-6)
        return self.tau * stats.norm.ppf(target) - self.mu

    def truth(self) -> np.ndarray:
        """The population differences (accuracy, not points) the comparisons estimate."""
        return np.asarray(self.effects, dtype=float) / 100


def correctness(scenario: Scenario, rng: np.random.Generator, sweeps: int) -> np.ndarray:
    """(sweeps, sets, seeds, examples) bool: set 0 is the baseline."""
    k = len(scenario.effects) + 1
    n, m = scenario.seeds, scenario.examples
    shift = np.concatenate([[0.0], scenario.deltas()]).astype(np.float32)
    b = rng.standard_normal((sweeps, 1, 1, m), dtype=np.float32) * DIFFICULTY
    gamma = rng.standard_normal((sweeps, k, 1, m), dtype=np.float32) * scenario.interaction
    a = rng.standard_normal((sweeps, 1, n, 1), dtype=np.float32) * SEED_SHARED
    v = rng.standard_normal((sweeps, k, n, 1), dtype=np.float32) * scenario._v
    z = scenario.mu + shift[None, :, None, None] + a + v + gamma - b
    # ε ~ N(0, 1): correct with probability Φ(z)
    return rng.random((sweeps, k, n, m), dtype=np.float32) < special.ndtr(z)


def sweeps(scenario: Scenario, rng: np.random.Generator, total: int,
           batch: int = 25) -> Iterator[np.ndarray]:
    """Per sweep, the per-example differences to the baseline: (candidates, seeds, examples)
    int8."""
    done = 0
    while done < total:
        size = min(batch, total - done)
        c = correctness(scenario, rng, size).astype(np.int8)
        yield from c[:, 1:] - c[:, :1]
        done += size


@dataclass(frozen=True)
class LossScenario:
    """Continuous per-example values under the null: the SFT loss of run s of target set t
    on example i, as the report pairs it (nll_i / mean tokens, examples.py), is

        x = (tokens_i / mean tokens) · exp(b_i + a_s + v_{t,s} + γ_{t,i} + ε_{t,s,i}),

    with example difficulty b, a seed effect a shared by every target set, set × seed noise
    v, a set × example term γ and run × example noise ε, all normal and the same for every
    target set, so every true difference is 0 (over seeds and examples alike)."""

    candidates: int = 8
    seeds: int = 5
    examples: int = 500
    seed_sd: float = 0.02  # of v
    interaction: float = 0.3  # sd of γ: its part of a difference is as large as the seeds'

    noise: float = 0.3  # sd of ε


def loss_sweeps(scenario: LossScenario, rng: np.random.Generator, total: int,
                batch: int = 25) -> Iterator[np.ndarray]:
    """Per sweep, the per-example loss differences to the baseline: (candidates, seeds,
    examples) float."""
    k, n, m = scenario.candidates + 1, scenario.seeds, scenario.examples
    done = 0
    while done < total:
        size = min(batch, total - done)
        tokens = rng.integers(3, 30, (size, 1, 1, m)).astype(np.float32)
        z = (rng.standard_normal((size, 1, 1, m), dtype=np.float32) * 0.5
             + rng.standard_normal((size, 1, n, 1), dtype=np.float32) * 0.1
             + rng.standard_normal((size, k, n, 1), dtype=np.float32) * scenario.seed_sd
             + rng.standard_normal((size, k, 1, m), dtype=np.float32) * scenario.interaction
             + rng.standard_normal((size, k, n, m), dtype=np.float32) * scenario.noise)
        x = (tokens / tokens.mean(axis=-1, keepdims=True) * np.exp(z)).astype(np.float64)
        yield from x[:, 1:] - x[:, :1]
        done += size


def fixed(d: np.ndarray, alpha: float = 0.05, seeds: int | None = None,
          examples: bool = True) -> list[FamilyResult]:
    """The fixed design's family test on the first `seeds` seeds of one sweep (`examples`
    False: an SE over seeds only, as if there were no per-example values)."""
    d = d[:, :seeds] if seeds else d
    return family_test([paired_difference(f"s{t}", x.mean(axis=1), x if examples else None)
                        for t, x in enumerate(d)], alpha)


def staged(d: np.ndarray, design: StagedDesign) -> list[FamilyResult]:
    """The staged design on one sweep generated with design.max_seeds seeds."""
    first = [paired_difference(f"s{t}", x[:design.stage1_seeds].mean(axis=1),
                               x[:design.stage1_seeds]) for t, x in enumerate(d)]
    final = {f"s{t}": paired_difference(f"s{t}", x.mean(axis=1), x) for t, x in enumerate(d)}
    return [r.result for r in staged_family(first, final, design)]


@dataclass
class Tally:
    """Family-wise errors, coverage and power over sweeps of one scenario."""

    truth: np.ndarray
    sweeps: int = 0
    family_errors: int = 0
    intervals: int = 0
    covered: int = 0
    covered_per_comparison: int = 0
    detected: np.ndarray | None = None
    seeds_used: int = 0
    runs: int = 0

    def add(self, results: list[FamilyResult]) -> None:
        self.sweeps += 1
        resolved = np.array([r.resolved for r in results])
        null = self.truth == 0
        wrong_sign = np.array([r.resolved and np.sign(r.mean) != np.sign(t)
                               for r, t in zip(results, self.truth)])
        self.family_errors += bool((resolved & null).any() or wrong_sign[~null].any())
        for r, t in zip(results, self.truth):
            if math.isfinite(r.ci_low):
                self.intervals += 1
                self.covered += r.ci_low <= t <= r.ci_high
                self.covered_per_comparison += (r.ci_low_per_comparison <= t
                                                <= r.ci_high_per_comparison)
        self.detected = resolved.astype(int) + (0 if self.detected is None else self.detected)
        self.seeds_used += sum(r.n_seeds for r in results)
        # runs: every set (and the baseline) at the first stage's seeds, then the continued
        # sets and the baseline up to the maximum
        seeds = [r.n_seeds for r in results]
        first, most = min(seeds), max(seeds)
        more = sum(n > first for n in seeds)
        self.runs += (len(results) + 1) * first + (more + (more > 0)) * (most - first)

    @property
    def fwer(self) -> float:
        return self.family_errors / self.sweeps

    @property
    def coverage(self) -> float:
        return self.covered / self.intervals

    @property
    def coverage_per_comparison(self) -> float:
        return self.covered_per_comparison / self.intervals

    def power(self, index: int) -> float:
        return float(self.detected[index]) / self.sweeps


def upper(rate: float, trials: int, z: float = 2.58) -> float:
    """The binomial margin above a nominal rate (99 % one-sided, normal approximation)."""
    return rate + z * math.sqrt(rate * (1 - rate) / trials)
