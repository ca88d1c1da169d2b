"""Splitting fused projections: the model's function is unchanged, the parts have the
shapes the config implies, splitting twice changes nothing, and LoRA on Q and V of
GPT-2 leaves K exactly as it was."""

import copy

import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from helpers import compose_run
from lora_ablate.plan.adapters import lora_config
from lora_ablate.plan.resolve import resolve_run
from lora_ablate.model.architectures import split_rules_for
from lora_ablate.model.surgery import split_fused_projections

HIDDEN, HEADS, LAYERS, VOCAB = 64, 4, 2, 260
HEAD_DIM = HIDDEN // HEADS
# A larger init than the default makes attention sharp, so a mislaid head or part would show.
INIT = 0.2

FUSED = {
    "gpt2": dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64, vocab_size=VOCAB,
                 bos_token_id=1, eos_token_id=2, initializer_range=INIT),
    "gpt_neox": dict(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
                     initializer_range=INIT),
    "phi3_gqa": dict(hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     num_key_value_heads=2, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                     initializer_range=INIT),
    "phi3": dict(hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 num_key_value_heads=HEADS, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                 initializer_range=INIT),
}

# part name -> (d_in, d_out) from the config numbers above
EXPECTED_PARTS = {
    "gpt2": {"attn.c_attn": {"q": (64, 64), "k": (64, 64), "v": (64, 64)}},
    "gpt_neox": {"attention.query_key_value": {"q": (64, 64), "k": (64, 64), "v": (64, 64)}},
    "phi3_gqa": {"self_attn.qkv_proj": {"q": (64, 64), "k": (64, 2 * HEAD_DIM), "v": (64, 2 * HEAD_DIM)},
                 "mlp.gate_up_proj": {"gate": (64, 96), "up": (64, 96)}},
    "phi3": {"self_attn.qkv_proj": {"q": (64, 64), "k": (64, 64), "v": (64, 64)},
             "mlp.gate_up_proj": {"gate": (64, 96), "up": (64, 96)}},
}


def tiny(key: str, seed: int = 0):
    config = AutoConfig.for_model(key.removesuffix("_gqa"), **FUSED[key])
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval(), config


def logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(7))


def block_modules(model, path):
    return [m for name, m in model.named_modules() if name.endswith("." + path)]


@pytest.mark.parametrize("key", list(FUSED))
def test_split_keeps_the_function(key, tokens):
    model, config = tiny(key)
    before = logits(model, tokens)
    assert before.abs().max() > 0.1  # the check below is not vacuous
    replaced = split_fused_projections(model, split_rules_for(config))
    assert replaced
    after = logits(model, tokens)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", list(FUSED))
def test_split_parts_are_linear_with_config_shapes(key):
    model, config = tiny(key)
    split_fused_projections(model, split_rules_for(config))
    for path, parts in EXPECTED_PARTS[key].items():
        fused = block_modules(model, path)
        assert len(fused) == LAYERS, path
        for module in fused:
            for part, (d_in, d_out) in parts.items():
                linear = module.get_submodule(part)
                assert type(linear) is nn.Linear
                assert (linear.in_features, linear.out_features) == (d_in, d_out), (path, part)
    if key == "gpt2":  # every Conv1D becomes Linear; none is left
        assert not [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]


@pytest.mark.parametrize("key", list(FUSED))
def test_split_twice_is_a_no_op(key, tokens):
    model, config = tiny(key)
    split_fused_projections(model, split_rules_for(config))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    structure = [(n, type(m).__name__) for n, m in model.named_modules()]
    once = logits(model, tokens)
    assert split_fused_projections(model, split_rules_for(config)) == []
    assert [(n, type(m).__name__) for n, m in model.named_modules()] == structure
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(logits(model, tokens), once)


def test_split_twice_on_gpt2_with_square_ffn_changes_nothing(tokens):
    """With n_inner == n_embd every GPT-2 projection is square, so re-converting an
    already converted Linear as if it were a Conv1D would silently transpose it."""
    config = AutoConfig.for_model("gpt2", **{**FUSED["gpt2"], "n_inner": HIDDEN})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    split_fused_projections(model, split_rules_for(config))
    once = logits(model, tokens)
    split_fused_projections(model, split_rules_for(config))
    torch.testing.assert_close(logits(model, tokens), once, atol=0, rtol=0)


def test_neox_split_is_checked_per_head(tokens):
    """Control: swapping two heads' rows inside the split Q changes the logits clearly,
    so the 1e-5 check above would catch a wrong (non-interleaved) layout."""
    model, config = tiny("gpt_neox")
    split_fused_projections(model, split_rules_for(config))
    before = logits(model, tokens)
    q = block_modules(model, "attention.query_key_value")[0].get_submodule("q")
    with torch.no_grad():
        rows = torch.arange(HIDDEN).view(HEADS, HEAD_DIM)[[1, 0, 2, 3]].reshape(-1)
        q.weight.copy_(q.weight[rows])
    assert (logits(model, tokens) - before).abs().max() > 1e-3


def test_split_on_the_meta_device():
    config = AutoConfig.for_model("phi3", **FUSED["phi3_gqa"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert len(split_fused_projections(model, split_rules_for(config))) == 2 * LAYERS
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("model_type, settings", [
    # registered, with separate projections
    ("llama", dict(hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                   vocab_size=VOCAB)),
    # not registered: a user's matrix map names its modules as they are
    ("gptj", dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, rotary_dim=8, vocab_size=VOCAB)),
])
def test_a_model_without_split_rules_is_left_as_it_is(model_type, settings):
    config = AutoConfig.for_model(model_type, **settings)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    structure = [(n, type(m)) for n, m in model.named_modules()]
    assert split_rules_for(config) == {}
    assert split_fused_projections(model, split_rules_for(config)) == []
    assert [(n, type(m)) for n, m in model.named_modules()] == structure


def test_gpt2_qv_leaves_k_bit_identical_after_training():
    cfg = compose_run(["model=tiny_gpt2", "targets=qv"])
    resolved = resolve_run(cfg)
    config = copy.deepcopy(resolved.model_config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    d = config.n_embd
    original = [(b.attn.c_attn.weight.detach().clone(), b.attn.c_attn.bias.detach().clone())
                for b in model.transformer.h]
    split_fused_projections(model, split_rules_for(config))
    assert {m.matrix for m in resolved.plan.modules} == {"q", "v"}

    peft_model = get_peft_model(model, lora_config(resolved.plan, cfg.lora))
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    tokens = torch.randint(3, config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(3))
    for _ in range(4):
        loss = peft_model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    merged = peft_model.merge_and_unload()

    for block, (weight, bias) in zip(merged.transformer.h, original):
        # Conv1D weight is (in, out) with out = [Q | K | V]
        c_attn = block.attn.c_attn
        k_weight, k_bias = weight[:, d:2 * d].t(), bias[d:2 * d]
        assert torch.equal(c_attn.k.weight, k_weight)
        assert torch.equal(c_attn.k.bias, k_bias)
        assert not torch.equal(c_attn.q.weight, weight[:, :d].t())
        assert not torch.equal(c_attn.v.weight, weight[:, 2 * d:].t())
        assert torch.equal(c_attn.q.bias, bias[:d])  # bias="none": LoRA leaves biases alone
