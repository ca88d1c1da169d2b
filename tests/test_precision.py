"""bf16 (issue 12): which precision `auto` picks, the frozen base held in bf16, and runs
that train and evaluate in it. No timings: speed is benchmarks/bench_train.py's business."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lora_ablate.errors import ConfigError
from lora_ablate.plan.resolve import resolve_run
from lora_ablate.run.precision import cpu_has_native_bf16, hold_frozen_matmul_weights, resolve_precision
from lora_ablate.run.session import prepare
from test_train import compose_run, local_overrides, train_once, write_reviews

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("precision") / "reviews.csv")


def test_explicit_precisions_pass_and_auto_follows_the_cpu():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    flags = open("/proc/cpuinfo").read()
    if " avx512_bf16" in flags or " amx_bf16" in flags:
        assert cpu_has_native_bf16()


def tiny_peft() -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=40, num_labels=3)
    model = BertForSequenceClassification(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])
    return get_peft_model(model, lora)


def test_only_frozen_matmul_weights_go_to_bf16():
    model = tiny_peft()
    cast = hold_frozen_matmul_weights(model, torch.bfloat16)
    # per layer: q, k, v, attention output (32x32 + 32 each), intermediate 32x48 + 48,
    # output 48x32 + 32; then the pooler 32x32 + 32 and the frozen original classifier 32x3 + 3
    per_layer = 4 * (32 * 32 + 32) + (32 * 48 + 48) + (48 * 32 + 32)
    assert cast == 2 * per_layer + (32 * 32 + 32) + (32 * 3 + 3)
    for name, param in model.named_parameters():
        if param.requires_grad:  # LoRA A/B and the trained head copy stay fp32
            assert param.dtype == torch.float32, name
        elif "embeddings" in name or "LayerNorm" in name:
            assert param.dtype == torch.float32, name
        else:
            assert param.dtype == torch.bfloat16, name


def test_bf16_base_computes_what_autocast_computes():
    """Autocast casts fp32 Linear weights to bf16 on every call; holding them in bf16 gives
    the same numbers without the casts."""
    model = tiny_peft().eval()
    ids = torch.randint(0, 100, (4, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits.float()
        hold_frozen_matmul_weights(model, torch.bfloat16)
        after = model(input_ids=ids).logits.float()
    assert torch.equal(before, after)


def test_a_bf16_run_trains_evaluates_and_says_so(reviews, tmp_path):
    cfg, _ = compose_run(local_overrides(reviews) + ["train.precision=bf16"])
    session = prepare(cfg, resolve_run(cfg), CPU)
    assert session.precision == "bf16" and session.autocast_dtype == torch.bfloat16
    query = session.model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query")
    assert query.base_layer.weight.dtype == torch.bfloat16
    assert query.lora_A["default"].weight.dtype == torch.float32
    bf16 = train_once(local_overrides(reviews) + ["train.precision=bf16"], tmp_path / "bf16")
    fp32 = train_once(local_overrides(reviews), tmp_path / "fp32")
    assert bf16["status"] == "completed" and bf16["cost"]["precision"] == "bf16"
    assert fp32["cost"]["precision"] == "fp32"
    # 6 steps on the same batches, masks and init: bf16 rounding moves the loss a little only
    assert abs(bf16["metrics"]["val/loss"] - fp32["metrics"]["val/loss"]) < 0.02


def test_gradient_checkpointing_changes_memory_not_results(reviews, tmp_path):
    plain = train_once(local_overrides(reviews), tmp_path / "plain")
    checkpointed = train_once(local_overrides(reviews) + ["train.gradient_checkpointing=true"], tmp_path / "ckpt")
    assert checkpointed["status"] == "completed"
    for key, value in plain["metrics"].items():  # recomputation replays the same dropout masks
        assert checkpointed["metrics"][key] == pytest.approx(value, abs=1e-5), key


def test_gradient_checkpointing_needs_a_model_that_supports_it(reviews, monkeypatch):
    from transformers import BertPreTrainedModel

    monkeypatch.setattr(BertPreTrainedModel, "supports_gradient_checkpointing", False)
    cfg, _ = compose_run(local_overrides(reviews) + ["train.gradient_checkpointing=true"])
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        prepare(cfg, resolve_run(cfg), CPU)
