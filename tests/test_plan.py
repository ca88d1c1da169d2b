"""Plans under the default budget on real architectures, the LoRA paper's RoBERTa numbers,
parameter accounting, and the PEFT model built from a plan."""

import math

import pytest
from peft import get_peft_model

from helpers import (
    ARCHS,
    arch_overrides,
    compose_run,
    expected_matrices,
    mentions,
    real_model,
    roberta_param_counts,
    save_config,
)
from lora_ablate.plan.adapters import lora_config
from lora_ablate.errors import ConfigError
from lora_ablate.target_sets import TARGET_SETS
from lora_ablate.plan.resolve import resolve_run

ROBERTA_QV_R8 = 294_912  # 12 layers × (q + v) × r=8 × (768 + 768)


def reference_budget(arch, rank=8):
    """Default budget: q and v at r=8 on every layer."""
    return rank * arch.layers * (arch.size("q") + arch.size("v"))


@pytest.mark.parametrize("option", list(TARGET_SETS))
@pytest.mark.parametrize("key", list(ARCHS))
def test_default_budget_is_met_within_one_percent(plan_cache, arch_dirs, key, option):
    arch = ARCHS[key]
    matrices = expected_matrices(arch, option)
    budget = reference_budget(arch)
    minimum = arch.layers * sum(arch.size(m) for m in matrices)
    largest = max(arch.size(m) for m in matrices)
    plan = plan_cache.get(arch_overrides(arch_dirs[key]), option)

    if minimum > budget:  # e.g. Qwen2-0.5B `all`: its GQA makes q,v r=8 cheaper than rank 1 everywhere
        assert isinstance(plan, ConfigError), "expected the budget to be infeasible"
        assert mentions(str(plan), budget) and mentions(str(plan), minimum), str(plan)
        return
    assert not isinstance(plan, ConfigError), plan

    out = plan.to_dict()
    assert out["budget"]["target"] == budget
    assert out["lora_params"] == out["budget"]["actual"] == sum(mod["params"] for mod in out["modules"])
    for mod in out["modules"]:
        assert mod["params"] == mod["rank"] * (mod["d_in"] + mod["d_out"])
    assert abs(out["lora_params"] - budget) <= 0.01 * budget
    assert 2 * abs(out["lora_params"] - budget) <= largest  # as close as base/base+1 ranks can get
    assert out["budget"]["deviation"] == pytest.approx((out["lora_params"] - budget) / budget)
    ranks = [mod["rank"] for mod in out["modules"]]
    assert max(ranks) - min(ranks) <= 1
    assert min(ranks) == budget // minimum


@pytest.mark.parametrize("option, rank", [("qv", 8), ("q", 16), ("v", 16), ("k", 16), ("qkvo", 4), ("qkv_ffn", 2)])
def test_roberta_base_numbers_from_the_lora_paper(plan_cache, arch_dirs, option, rank):
    plan = plan_cache.get(arch_overrides(arch_dirs["roberta_base"]), option)
    out = plan.to_dict()
    assert out["budget"]["target"] == ROBERTA_QV_R8
    assert out["lora_params"] == ROBERTA_QV_R8
    assert out["budget"]["deviation"] == 0
    assert {m["rank"] for m in out["modules"]} == {rank}


def test_roberta_head_and_base_params_counted_apart(plan_cache, arch_dirs):
    arch = ARCHS["roberta_base"]
    cfg = plan_cache.config(arch_overrides(arch_dirs["roberta_base"]))
    base, head = roberta_param_counts(arch, cfg.task.num_labels)
    out = plan_cache.get(arch_overrides(arch_dirs["roberta_base"]), "qv").to_dict()
    assert out["head_params"] == head
    assert out["base_params"] == base


def test_gpt2_base_params_and_no_head(plan_cache, arch_dirs):
    """GPT-2 124M (tied LM head) for label-word classification: no separate head."""
    arch = ARCHS["gpt2_124m"]
    h, n, c = arch.hidden, arch.layers, arch.config
    layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * 4 * h + 4 * h) + (4 * h * h + h)
    expected = c["vocab_size"] * h + c["n_positions"] * h + n * layer + 2 * h
    assert expected == 124_439_808  # the well-known GPT-2 small count
    out = plan_cache.get(arch_overrides(arch_dirs["gpt2_124m"]), "qv").to_dict()
    assert out["head_params"] == 0
    assert out["base_params"] == expected


# --------------------------------------------------------------------------- PEFT model


def peft_from_plan(overrides, seed=0):
    """The plan, the lora settings and the PEFT model built from them on a real model."""
    cfg = compose_run(overrides)
    resolved = resolve_run(cfg)
    model = real_model(resolved, num_labels=cfg.task.num_labels, seed=seed)
    return resolved.plan, cfg.lora, get_peft_model(model, lora_config(resolved.plan, cfg.lora))


def lora_modules(peft_model):
    """Adapted modules by their name in the base model."""
    inner = peft_model.base_model.model
    return {name: module for name, module in inner.named_modules() if hasattr(module, "lora_A") and module.lora_A}


def check_peft_matches_plan(plan, lora, peft_model, scaling):
    lora_count = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    assert lora_count == plan.lora_params
    adapted = lora_modules(peft_model)
    assert set(adapted) == {m.name for m in plan.modules}
    for planned in plan.modules:
        module = adapted[planned.name]
        assert module.r["default"] == planned.rank, planned.name
        assert tuple(module.lora_A["default"].weight.shape) == (planned.rank, planned.d_in)
        assert tuple(module.lora_B["default"].weight.shape) == (planned.d_out, planned.rank)
        assert module.scaling["default"] == pytest.approx(scaling(planned.rank)), planned.name
    # only LoRA weights and the task head train
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            assert "lora_" in name or any(h in name for h in plan.head_modules), name


TINY_CASES = [
    ["model=tiny_llama", "targets=all"],
    ["model=tiny_gpt2", "targets=qv"],
    ["model=tiny_bert", "targets=qkv_ffn"],
]


@pytest.mark.parametrize("overrides", TINY_CASES, ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_peft_model_has_exactly_the_planned_adapters(overrides):
    plan, lora, peft_model = peft_from_plan(overrides)
    check_peft_matches_plan(plan, lora, peft_model, scaling=lambda r: lora.alpha_over_rank)


@pytest.mark.parametrize("overrides", TINY_CASES, ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_peft_model_with_mixed_ranks(overrides):
    # a budget that is not a multiple of the rank-1 cost -> some modules get base+1
    ovr = [*overrides, "budget=params", "budget.params=3001", "lora.alpha_over_rank=0.5"]
    plan, lora, peft_model = peft_from_plan(ovr)
    assert len({m.rank for m in plan.modules}) == 2, "precondition: mixed ranks"
    assert lora.alpha_over_rank == 0.5
    check_peft_matches_plan(plan, lora, peft_model, scaling=lambda r: 0.5)


def test_peft_model_with_rslora():
    ovr = ["model=tiny_llama", "targets=all", "budget=params", "budget.params=3001", "lora.use_rslora=true",
           "lora.rslora_alpha=12"]
    plan, lora, peft_model = peft_from_plan(ovr)
    assert len({m.rank for m in plan.modules}) == 2
    check_peft_matches_plan(plan, lora, peft_model, scaling=lambda r: 12 / math.sqrt(r))


def test_peft_model_on_fused_architectures(tmp_path):
    """GPT-NeoX and Phi-3 (GQA): after the split, LoRA sits on q/k/v (and gate/up) parts."""
    neox = save_config(tmp_path / "neox", "gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, vocab_size=260)
    phi3 = save_config(tmp_path / "phi3", "phi3", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=260, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    for folder, option in [(neox, "qv"), (phi3, "all")]:
        ovr = list(arch_overrides(folder, f"targets={option}", "budget=params", "budget.params=2501"))
        plan, lora, peft_model = peft_from_plan(ovr)
        check_peft_matches_plan(plan, lora, peft_model, scaling=lambda r: lora.alpha_over_rank)
    shapes = {m.matrix: (m.d_in, m.d_out) for m in plan.modules}  # phi3: head_dim 16, 2 kv heads
    assert shapes == {"q": (64, 64), "k": (64, 32), "v": (64, 32), "o": (64, 64),
                      "ffn_gate": (64, 96), "ffn_up": (64, 96), "ffn_down": (96, 64)}


def test_peft_rank_pattern_with_many_layers(tmp_path):
    """12 layers: per-module rank patterns for layer 1 must not catch layers 10 and 11."""
    folder = save_config(tmp_path / "bert12", "bert", hidden_size=32, intermediate_size=64, num_hidden_layers=12,
                         num_attention_heads=2, vocab_size=260, max_position_embeddings=64)
    ovr = list(arch_overrides(folder, "targets=all", "budget=params", "budget.params=20011"))
    plan, lora, peft_model = peft_from_plan(ovr)
    ranks = {m.rank for m in plan.modules}
    assert len(ranks) == 2
    # the +1s fall on some layers below 10 and not on others, so a loose pattern would show
    plus = {m.name for m in plan.modules if m.rank == max(ranks)}
    assert 0 < len(plus) < len(plan.modules)
    check_peft_matches_plan(plan, lora, peft_model, scaling=lambda r: lora.alpha_over_rank)
