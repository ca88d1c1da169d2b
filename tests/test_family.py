"""The family procedure (family.py), the staged design (staged.py) and family-level
planning (planning.py): duality of interval and "resolved" on random inputs, the variance
estimator against its definition, Holm's steps, and planning that never offers the seeds a
comparison already has."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from lora_ablate.report import planning
from lora_ablate.report.family import (PairedDifference, example_component, family_test,
                                       paired_difference)
from lora_ablate.report.staged import StagedDesign, stage_one, staged_family


def random_difference(rng, name):
    """A comparison drawn from the awkward cases: ties, constant or cancelling per-seed
    differences, NaN, one seed, per-example data or none."""
    kind = rng.integers(0, 8)
    n = int(rng.integers(1, 8))
    m = int(rng.integers(1, 60))
    if kind == 0:
        return paired_difference(name, np.zeros(n), np.zeros((n, m)) if rng.random() < .5 else None)
    if kind == 1:
        return paired_difference(name, np.full(n, rng.choice([-0.01, 0.02])))
    if kind == 2:
        return paired_difference(name, np.array([9, 51, 33, -74, -19]) / 2000)
    if kind == 3:
        d = rng.normal(0, 0.02, n)
        d[rng.integers(0, n)] = np.nan
        return paired_difference(name, d)
    if kind == 4:  # discrete per-example differences; per-seed means from them
        ex = rng.choice([-1, 0, 1], size=(n, m), p=[0.1, 0.75, 0.15])
        return paired_difference(name, ex.mean(axis=1), ex)
    if kind == 5:  # equal p-values: the same differences twice
        return paired_difference(name, np.array([0.01, 0.03, 0.02, 0.025])[:max(n, 2)])
    return paired_difference(name, rng.normal(rng.choice([0, 0.01, 0.05]), 0.02, n))


def test_interval_excludes_zero_exactly_when_resolved_on_random_families():
    rng = np.random.default_rng(0)
    seen_resolved = seen_open = 0
    for trial in range(3000):
        size = int(rng.integers(1, 9))
        diffs = [random_difference(rng, f"s{i}") for i in range(size)]
        alpha = float(rng.choice([0.05, 0.01, 0.2]))
        results = family_test(diffs, alpha)
        assert [r.target_set for r in results] == [d.target_set for d in diffs]
        for r in results:
            excludes = r.ci_low > 0 or r.ci_high < 0
            assert excludes == r.resolved, (trial, r)
            assert r.level <= alpha + 1e-15
            if r.resolved:
                assert r.p_holm < alpha * (1 + 1e-9)
            seen_resolved += r.resolved
            seen_open += not r.resolved
    assert seen_resolved > 100 and seen_open > 100


def test_holm_levels_follow_the_steps_and_stop_at_the_first_open_one():
    # three clear effects and one null: steps 1-3 at α/4, α/3, α/2; the null at α/1
    rng = np.random.default_rng(1)
    diffs = [paired_difference(f"e{i}", rng.normal(0.05, 0.005, 6)) for i in range(3)]
    diffs.append(paired_difference("null", np.array([0.01, -0.01, 0.005, -0.004, 0.0, 0.002])))
    results = family_test(diffs, 0.05)
    levels = sorted(r.level for r in results)
    assert levels == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05])
    assert [r.resolved for r in results] == [True, True, True, False]
    # an open step stops the procedure: later members keep its level
    weak = [paired_difference("a", np.array([0.01, 0.012, 0.011, 0.0]) * 1),
            paired_difference("b", np.array([0.001, -0.002, 0.003, 0.0])),
            paired_difference("c", np.array([0.0, 0.001, -0.001, 0.0005]))]
    out = family_test(weak, 0.05)
    first_open = min((r for r in out if not r.resolved), key=lambda r: r.step)
    assert all(r.level == first_open.level for r in out if r.step > first_open.step)


def test_interval_is_mean_plus_t_quantile_times_se():
    d = np.array([0.02, 0.035, 0.01, 0.028, 0.015])
    (r,) = family_test([paired_difference("x", d)], 0.05)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (r.ci_low, r.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r.p == pytest.approx(sps.ttest_1samp(d, 0).pvalue)


def test_variance_counts_seed_and_example_terms_once():
    rng = np.random.default_rng(2)
    n, m = 5, 400
    d = rng.normal(0, 1, (n, m)) + rng.normal(0, 0.3, (1, m)) + rng.normal(0, 0.2, (n, 1))
    rows, cols, grand = d.mean(1), d.mean(0), d.mean()
    mse = np.sum((d - rows[:, None] - cols[None, :] + grand) ** 2) / ((n - 1) * (m - 1))
    component = max(0.0, cols.var(ddof=1) - mse / n)
    assert example_component(d) == pytest.approx(component)
    diff = paired_difference("x", rows, d)
    assert diff.se ** 2 == pytest.approx(rows.var(ddof=1) / n + component / m)
    assert paired_difference("x", rows).se ** 2 == pytest.approx(rows.var(ddof=1) / n)


def test_untestable_members_count_in_the_family():
    ok = paired_difference("ok", np.array([0.02, 0.021, 0.019, 0.0205, 0.0195, 0.02]))
    alone, = family_test([ok], 0.05)
    with_one_seed = family_test([ok, paired_difference("one", np.array([0.3]))], 0.05)
    assert math.isnan(with_one_seed[1].p) and not with_one_seed[1].resolved
    assert math.isnan(with_one_seed[1].ci_low)
    assert with_one_seed[0].level == pytest.approx(0.025) and alone.level == 0.05
    assert with_one_seed[0].p_holm == pytest.approx(2 * alone.p)


def test_tie_and_zero_variance_are_not_resolved():
    tie = paired_difference("tie", np.zeros(5), np.zeros((5, 10)))
    flat = paired_difference("flat", np.full(5, 0.01))
    r_tie, r_flat = family_test([tie, flat], 0.05)
    assert r_tie.p == 1 and (r_tie.ci_low, r_tie.ci_high) == (0.0, 0.0)
    assert math.isnan(r_flat.p) and "zero variance" in flat.note and not r_flat.resolved


def test_staged_design_continues_only_open_promising_comparisons():
    rng = np.random.default_rng(3)
    design = StagedDesign(stage1_seeds=5, max_seeds=10)
    clear = rng.normal(0.08, 0.01, 10)
    promising = np.array([0.03, 0.05, 0.01, 0.04, 0.02, 0.035, 0.03, 0.045, 0.025, 0.04])
    null = np.array([0.01, -0.02, 0.015, -0.01, 0.0, 0.02, -0.01, 0.0, 0.01, -0.02])
    seeds = {"clear": clear, "promising": promising, "null": null}
    first = [paired_difference(k, v[:5]) for k, v in seeds.items()]
    one = stage_one(first, design)
    assert one.results[0].resolved and one.continuing == ("promising",)
    final = {k: paired_difference(k, v) for k, v in seeds.items()}
    out = {r.target_set: r for r in staged_family(first, final, design)}
    assert out["clear"].stage == 1 and out["promising"].stage == 2 and out["null"].stage == 1
    assert out["promising"].result.n_seeds == 10 and out["promising"].resolved
    # the final Holm is at α − α1 over all three (two count as p = 1): first step (α−α1)/3
    assert out["promising"].result.level == pytest.approx(0.04 / 3)
    for r in out.values():
        assert (r.result.ci_low > 0 or r.result.ci_high < 0) == r.resolved


@pytest.mark.parametrize("kwargs", [dict(stage1_seeds=1), dict(max_seeds=3),
                                    dict(alpha_stage1=0.05), dict(continue_p=0)])
def test_staged_design_rejects_bad_settings_naming_them(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        StagedDesign(**kwargs)


def test_planning_is_at_the_family_level_and_beyond_the_seeds_it_has():
    d = np.array([-0.038, -0.100, -0.036, -0.062, -0.027])  # q − qv at 100 steps (issue 18)
    diff = paired_difference("q", d)
    (result,) = family_test([diff] + [paired_difference(f"o{i}", np.array([0.01, -0.01, 0.0, 0.005, -0.005]))
                                      for i in range(7)], 0.05)[:1]
    plan = planning.plan(diff, alpha=0.05, family_size=8, effect=0.01, resolved=result.resolved)
    per_comparison = planning.plan(diff, alpha=0.05, family_size=1, effect=0.01, resolved=False)
    assert plan.mde > per_comparison.mde
    assert not result.resolved and plan.observed.seeds > diff.n_seeds
    # at the planned number of seeds a Bonferroni-level t-test has ≥ 80 % power
    k = plan.observed.seeds
    ncp = abs(diff.mean) / diff.se_at(k)
    crit = sps.t.ppf(1 - 0.05 / 16, k - 1)
    assert sps.nct.sf(crit, k - 1, ncp) >= 0.8 - 1e-3


def test_planning_never_returns_a_sentinel():
    cancels = paired_difference("x", np.array([9, 51, 33, -74, -19]) / 2000)
    plan = planning.plan(cancels, alpha=0.05, family_size=8, effect=0.01, resolved=False)
    assert plan.observed.seeds is None and "difference is 0" in plan.observed.note
    assert plan.effect.seeds > 5 and math.isfinite(plan.mde)
    tiny = paired_difference("t", np.array([0.0012, -0.05, 0.05, 0.002, -0.001]))
    plan = planning.plan(tiny, alpha=0.05, family_size=8, effect=0.01, resolved=False)
    assert plan.observed.seeds is None and plan.observed.note == "more than 1000"
    floor = PairedDifference("y", 5, 0.001, 0.01, 1e-6, example_var=0.04, n_examples=100)
    assert "no finite number" in planning.seeds_needed(floor, 0.001, 0.05).note
