"""Budget -> ranks: the allocator's guarantees (property tests against brute force), the
spread of the +1s over layers and matrices, and the three budget kinds end to end."""

import itertools
import math
from collections import Counter
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import ARCHS, arch_overrides, mentions, plan_for
from lora_ablate.plan.budget import allocate_ranks
from lora_ablate.config.schema import BudgetConfig, LoraSettings
from lora_ablate.errors import ConfigError
from lora_ablate.plan.layout import make_plan

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def total(ranks, sizes):
    return sum(r * s for r, s in zip(ranks, sizes))


@st.composite
def sizes_and_budget(draw, max_modules=10, max_size=3000):
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_modules))
    minimum = sum(sizes)
    budget = draw(st.integers(minimum, minimum * 40 + max_size))
    return sizes, budget


# --------------------------------------------------------------------------- allocator


@FAST
@given(sizes_and_budget())
def test_ranks_are_base_or_base_plus_one(case):
    sizes, budget = case
    ranks = allocate_ranks(sizes, budget)
    base = budget // sum(sizes)
    assert len(ranks) == len(sizes)
    assert set(ranks) <= {base, base + 1}
    assert max(ranks) - min(ranks) <= 1


@FAST
@given(sizes_and_budget(max_modules=10))
def test_total_is_as_close_to_the_budget_as_any_allocation_can_be(case):
    """Brute force over every subset of modules getting +1 on top of the base rank."""
    sizes, budget = case
    base = budget // sum(sizes)
    best = min(
        abs(base * sum(sizes) + sum(s for s, plus in zip(sizes, pick) if plus) - budget)
        for pick in itertools.product((0, 1), repeat=len(sizes))
    )
    assert abs(total(allocate_ranks(sizes, budget), sizes) - budget) == best


@FAST
@given(sizes_and_budget(max_modules=10), st.randoms(use_true_random=False))
def test_matrix_kinds_get_their_rounded_share_when_that_is_within_one_percent(case, rng):
    """Positions name matrices: each kind (matrix, size) gets floor or ceil of its
    proportional +1 count whenever some such rounding lands within 1 % of the budget (and
    then the closest of those roundings); otherwise the closest total any allocation has.
    The roundings are enumerated here by brute force."""
    sizes, budget = case
    positions = [(rng.randrange(4), rng.randrange(3)) for _ in sizes]
    plain = allocate_ranks(sizes, budget)
    spread = allocate_ranks(sizes, budget, positions=positions)
    base = budget // sum(sizes)
    assert set(spread) <= {base, base + 1}
    deviation = abs(total(spread, sizes) - budget)
    assert deviation <= max(abs(total(plain, sizes) - budget), 0.01 * budget)
    assert 2 * deviation <= max(sizes)
    kinds = sorted({(matrix, size) for (_, matrix), size in zip(positions, sizes)})
    if len({matrix for matrix, _ in kinds}) < 2:
        assert deviation == abs(total(plain, sizes) - budget)
        return
    leftover = budget - base * sum(sizes)
    members = {kind: [i for i, (p, s) in enumerate(zip(positions, sizes)) if (p[1], s) == kind] for kind in kinds}
    ideal = {kind: Fraction(leftover * len(members[kind]), sum(sizes)) for kind in kinds}
    roundings = itertools.product(*[sorted({math.floor(ideal[k]), math.ceil(ideal[k])}) for k in kinds])
    best = min(abs(base * sum(sizes) + sum(c * k[1] for c, k in zip(counts, kinds)) - budget) for counts in roundings)
    if best <= 0.01 * budget:
        for kind in kinds:
            plus = sum(spread[i] > base for i in members[kind])
            assert plus in (math.floor(ideal[kind]), math.ceil(ideal[kind])), (kind, plus, ideal[kind])
        assert deviation == best


@st.composite
def model_like_sizes(draw):
    """Many modules with a few distinct sizes, as in a real plan (layers × matrices)."""
    kinds = draw(st.lists(st.integers(2, 40_000), min_size=1, max_size=4))
    layers = draw(st.integers(1, 48))
    sizes = [s for _ in range(layers) for s in kinds]
    budget = draw(st.integers(sum(sizes), sum(sizes) * 64))
    return sizes, budget


@FAST
@given(st.one_of(sizes_and_budget(max_modules=60), model_like_sizes()))
def test_deviation_is_at_most_half_the_largest_module(case):
    """Adding the modules' sizes one by one walks from 0 to sum(sizes) in steps of at most
    max(size), so some allocation is within max(size)/2 of any budget: the optimum is too."""
    sizes, budget = case
    ranks = allocate_ranks(sizes, budget)
    assert set(ranks) <= {budget // sum(sizes), budget // sum(sizes) + 1}
    assert 2 * abs(total(ranks, sizes) - budget) <= max(sizes)


@FAST
@given(st.one_of(sizes_and_budget(max_modules=60), model_like_sizes()))
def test_within_one_percent_when_the_largest_module_is_at_most_two_percent(case):
    sizes, budget = case
    assume(max(sizes) <= 0.02 * budget)
    assert abs(total(allocate_ranks(sizes, budget), sizes) - budget) <= 0.01 * budget


@FAST
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=20), st.integers(1, 40))
def test_exact_multiples_give_one_rank_everywhere(sizes, rank):
    assert allocate_ranks(sizes, rank * sum(sizes)) == [rank] * len(sizes)


@FAST
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=20), st.data())
def test_budget_below_the_minimum_is_a_config_error_naming_both(sizes, data):
    minimum = sum(sizes)
    budget = data.draw(st.integers(-minimum, minimum - 1))
    with pytest.raises(ConfigError) as err:
        allocate_ranks(sizes, budget)
    assert mentions(str(err.value), budget) and mentions(str(err.value), minimum), str(err.value)


# --------------------------------------------------------------------------- spread of +1s


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        for name in ("q", "k", "v", "o"):
            self.add_module(name, nn.Linear(width, width, bias=False))


class _Stack(nn.Module):
    """A model of `layers` blocks with four equal square projections each (meta device)."""

    def __init__(self, layers: int, width: int = 8):
        super().__init__()
        with torch.device("meta"):
            self.layers = nn.ModuleList(_Block(width) for _ in range(layers))


_STACK_MAP = {m: m for m in ("q", "k", "v", "o")}


def _plus_one_counts(plan, layers, matrices):
    base = min(m.rank for m in plan.modules)
    plus = [m for m in plan.modules if m.rank > base]
    by_layer = Counter(m.layer for m in plus)
    by_matrix = Counter(m.matrix for m in plus)
    return [by_layer[layer] for layer in range(layers)], [by_matrix[m] for m in matrices]


@settings(max_examples=150, deadline=None)
@given(
    layers=st.integers(1, 16),
    matrices=st.sampled_from([["q", "v"], ["q", "k", "v"], ["q", "k", "v", "o"], ["q", "k"]]),
    base=st.integers(1, 6),
    data=st.data(),
)
def test_plus_ones_spread_evenly_over_layers_and_matrices(layers, matrices, base, data):
    width = 8
    size = 2 * width
    n = layers * len(matrices)
    extra = data.draw(st.integers(0, n - 1), label="modules getting +1")
    budget = (base * n + extra) * size
    plan = make_plan(
        _Stack(layers, width),
        model_type="synthetic",
        arch_map=_STACK_MAP,
        requested=matrices,
        budget=BudgetConfig(kind="params", params=budget),
        lora=LoraSettings(),
        head_modules=[],
    )
    assert plan.lora_params == budget
    per_layer, per_matrix = _plus_one_counts(plan, layers, matrices)
    assert sum(per_layer) == extra
    assert max(per_layer) - min(per_layer) <= 1, per_layer
    assert max(per_matrix) - min(per_matrix) <= 1, per_matrix


@pytest.mark.parametrize("option, extra", [("qv", 6), ("qv", 12), ("qkvo", 12), ("qkvo", 8), ("qkvo", 30)])
def test_plus_ones_spread_on_a_roberta_plan(plan_cache, arch_dirs, option, extra):
    """RoBERTa-base: every attention matrix is 768x768 (1536 per rank); 12 layers."""
    arch = ARCHS["roberta_base"]
    matrices = plan_cache.option_matrices(option)
    n = arch.layers * len(matrices)
    budget = (3 * n + extra) * 1536
    plan = plan_cache.get(arch_overrides(arch_dirs["roberta_base"], "budget=params", f"budget.params={budget}"), option)
    assert plan.lora_params == budget
    per_layer, per_matrix = _plus_one_counts(plan, arch.layers, matrices)
    assert sum(per_layer) == extra
    assert max(per_layer) - min(per_layer) <= 1, per_layer
    assert max(per_matrix) - min(per_matrix) <= 1, per_matrix


# --------------------------------------------------------------------------- budget kinds


def _min_and_max_size(arch, matrices):
    sizes = [arch.size(m) for m in matrices]
    return arch.layers * sum(sizes), max(sizes)


@pytest.mark.parametrize("option", ["q", "qkvo", "ffn", "all"])
@pytest.mark.parametrize("params", [150_000, 294_912, 1_000_003, 3_333_333])
def test_params_budget_lands_within_one_percent_when_feasible(plan_cache, arch_dirs, option, params):
    arch = ARCHS["roberta_base"]
    matrices = plan_cache.option_matrices(option)
    wanted = {x for m in matrices for x in (arch.ffn if m == "ffn" else (m,))}
    minimum, largest = _min_and_max_size(arch, wanted)
    plan = plan_cache.get(arch_overrides(arch_dirs["roberta_base"], "budget=params", f"budget.params={params}"), option)
    if minimum > params:
        assert isinstance(plan, ConfigError)
        assert mentions(str(plan), params) and mentions(str(plan), minimum), str(plan)
        return
    assert not isinstance(plan, ConfigError), plan
    budget = plan.to_dict()["budget"]
    assert budget["target"] == params
    assert budget["actual"] == plan.lora_params == sum(m.rank * (m.d_in + m.d_out) for m in plan.modules)
    assert 2 * abs(plan.lora_params - params) <= largest
    assert abs(plan.lora_params - params) <= 0.01 * params
    assert budget["deviation"] == pytest.approx((plan.lora_params - params) / params)
    ranks = [m.rank for m in plan.modules]
    assert max(ranks) - min(ranks) <= 1


@pytest.mark.parametrize("rank", [1, 3, 8])
@pytest.mark.parametrize("key, option", [("roberta_base", "all"), ("llama3_8b", "qkv"), ("qwen2_0_5b", "all")])
def test_budget_none_gives_the_fixed_rank_everywhere(plan_cache, arch_dirs, key, option, rank):
    arch = ARCHS[key]
    plan = plan_cache.get(arch_overrides(arch_dirs[key], "budget=none", f"lora.rank={rank}"), option)
    matrices = {x for m in plan_cache.option_matrices(option) for x in (arch.ffn if m == "ffn" else (m,))}
    assert {m.rank for m in plan.modules} == {rank}
    assert plan.budget_target is None
    out = plan.to_dict()
    assert out["budget"]["target"] is None
    assert out["lora_params"] == out["budget"]["actual"] == rank * arch.layers * sum(arch.size(m) for m in matrices)


@pytest.mark.parametrize("reference_rank", [1, 4, 16])
def test_reference_rank_sets_the_budget(plan_cache, arch_dirs, reference_rank):
    arch = ARCHS["llama3_8b"]
    plan = plan_cache.get(arch_overrides(arch_dirs["llama3_8b"], f"budget.reference_rank={reference_rank}"), "qv")
    assert plan.budget_target == reference_rank * arch.layers * (arch.size("q") + arch.size("v"))
    assert {m.rank for m in plan.modules} == {reference_rank}


def test_budget_scale_multiplies_the_reference(plan_cache, arch_dirs):
    arch = ARCHS["roberta_base"]
    plan = plan_cache.get(arch_overrides(arch_dirs["roberta_base"], "budget.scale=0.5"), "qv")
    assert plan.budget_target == 4 * arch.layers * 2 * arch.size("q")
    assert {m.rank for m in plan.modules} == {4}


def test_budget_below_the_rank_one_minimum_names_budget_and_minimum():
    # tiny_llama: hidden 64, 4 heads of 16, 2 kv heads -> k, v project to 32; 2 layers
    minimum = 2 * ((64 + 64) + (64 + 32) + (64 + 32))  # targets=qkv at rank 1
    with pytest.raises(ConfigError) as err:
        plan_for(["model=tiny_llama", "targets=qkv", "budget=params", f"budget.params={minimum - 1}"])
    assert mentions(str(err.value), minimum - 1) and mentions(str(err.value), minimum), str(err.value)
    plan = plan_for(["model=tiny_llama", "targets=qkv", "budget=params", f"budget.params={minimum}"])
    assert {m.rank for m in plan.modules} == {1}


@pytest.mark.parametrize(
    "overrides, key, value",
    [
        (["budget=params", "budget.params=0"], "budget.params", "0"),
        (["budget=params", "budget.params=-5"], "budget.params", "-5"),
        (["budget=params"], "budget.params", "None"),
        (["budget=none", "lora.rank=0"], "lora.rank", "0"),
        (["budget=none", "lora.rank=-3"], "lora.rank", "-3"),
        (["budget.reference_rank=0"], "budget.reference_rank", "0"),
        (["budget.reference_rank=-2"], "budget.reference_rank", "-2"),
        (["budget.scale=0"], "budget.scale", "0"),
    ],
)
def test_non_positive_budget_settings_are_config_errors(overrides, key, value):
    with pytest.raises(ConfigError) as err:
        plan_for(["model=tiny_llama", *overrides])
    message = str(err.value)
    assert key in message and value in message, message
