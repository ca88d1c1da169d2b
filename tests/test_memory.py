"""The dry-run plan's memory estimate, against weight counts worked out from config numbers."""

import pytest

from helpers import ARCHS, arch_overrides, compose_run, plan_for

# tiny_llama: vocab 260, hidden 64, intermediate 128, 2 layers, 4 heads of 16, 2 kv heads, untied LM head
V, H, I, L, HEADS, KV = 260, 64, 128, 2, 4, 2 * 16
TINY_BASE = V * H + L * (H * H + 2 * H * KV + H * H + 3 * H * I + 2 * H) + H + V * H


@pytest.mark.parametrize("precision, width", [("fp32", 4), ("bf16", 2)])
def test_tiny_llama_estimate(precision, width):
    overrides = ["model=tiny_llama", "targets=all", f"train.precision={precision}", "train.batch_size=8"]
    cfg = compose_run(overrides)
    plan = plan_for(overrides).to_dict()
    mem = plan["memory_estimate"]
    assert plan["base_params"] == TINY_BASE and plan["head_params"] == 0  # label words: no head
    assert mem["precision"] == precision
    assert mem["base_weights_bytes"] == TINY_BASE * width
    lora = plan["lora_params"]
    assert (mem["lora_weights_bytes"], mem["lora_grads_bytes"], mem["lora_optimizer_bytes"]) == (4 * lora, 4 * lora, 8 * lora)
    assert mem["head_bytes"] == 0
    b, t = 8, cfg.task.max_length
    per_layer = b * t * (9 * H + 2 * KV + 4 * I) + 2 * b * HEADS * t * t
    assert mem["activations_bytes"] == (L * per_layer + b * t * H) * width + b * t * V * 4
    parts = [k for k in mem if k.endswith("_bytes") and k != "total_bytes"]
    assert mem["total_bytes"] == sum(mem[k] for k in parts)


def test_llama3_8b_weights_at_bf16(plan_cache, arch_dirs):
    """Llama-3-8B's well-known 8,030,261,248 parameters, 2 bytes each under bf16."""
    plan = plan_cache.get(arch_overrides(arch_dirs["llama3_8b"], "train.precision=bf16"), "qv").to_dict()
    a = ARCHS["llama3_8b"]
    kv = a.kv_heads * a.head_dim
    base = 2 * 128256 * a.hidden + a.layers * (2 * a.hidden ** 2 + 2 * a.hidden * kv + 3 * a.hidden * a.intermediate
                                                + 2 * a.hidden) + a.hidden
    assert base == 8_030_261_248 == plan["base_params"]
    assert plan["memory_estimate"]["base_weights_bytes"] == 2 * base
    assert plan["memory_estimate"]["total_bytes"] > 2 * base


def test_roberta_head_counted_with_its_frozen_copy(plan_cache, arch_dirs):
    plan = plan_cache.get(arch_overrides(arch_dirs["roberta_base"], "train.precision=fp32"), "qv").to_dict()
    h, labels = 768, 2
    head = h * h + h + h * labels + labels
    assert plan["head_params"] == head
    assert plan["memory_estimate"]["head_bytes"] == head * (16 + 4)
