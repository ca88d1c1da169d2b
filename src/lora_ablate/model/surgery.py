"""Split fused projections into one linear layer per logical matrix, before LoRA.

PEFT can only adapt a fused layer as a whole (GPT-2 `c_attn` holds Q, K and V), so
`targets=qv` would silently adapt K too. Here each fused layer becomes a
`SplitProjection` whose children (`q`, `k`, `v` or `gate`, `up`) are ordinary
`nn.Linear`s and whose forward rebuilds the fused output exactly, so the model's own
code and function are unchanged. Works on the meta device (dry runs) as well.

The rule builders below know each fused layout; which model_type uses which builder is
said once, in its `model.architectures` entry, and the caller hands its rules in.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import PretrainedConfig


# In-block module path of a fused projection -> function building its replacement.
SplitRules = dict[str, Callable[[nn.Module], nn.Module]]
RuleBuilder = Callable[[PretrainedConfig], SplitRules]  # sizes come from the model's config


class SplitProjection(nn.Module):
    """Stands in for a fused projection; returns the fused layout from separate parts.

    `heads=None`: parts are concatenated ([Q|K|V], [gate|up]). `heads=H`: the fused
    output is interleaved per head ([q_h k_h v_h] for each head h, as GPT-NeoX lays it out).
    """

    def __init__(self, parts: dict[str, nn.Linear], heads: int | None = None):
        super().__init__()
        for name, linear in parts.items():
            self.add_module(name, linear)
        self.part_names = tuple(parts)
        self.heads = heads

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        outputs = [self.get_submodule(name)(hidden) for name in self.part_names]
        if self.heads is None:
            return torch.cat(outputs, dim=-1)
        per_head = [out.unflatten(-1, (self.heads, -1)) for out in outputs]
        return torch.cat(per_head, dim=-1).flatten(-2)


def _linear_from(weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding a copy of `weight_out_in` (out × in) and `bias`."""
    d_out, d_in = weight_out_in.shape
    linear = nn.Linear(d_in, d_out, bias=bias is not None, device=weight_out_in.device, dtype=weight_out_in.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight_out_in)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.weight.requires_grad_(weight_out_in.requires_grad)
    return linear


def _weight_out_in(module: nn.Module) -> torch.Tensor:
    """Weight as (out, in); transformers' Conv1D stores it as (in, out)."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


def _split_rows(module: nn.Module, names: Sequence[str], sizes: Sequence[int]) -> SplitProjection:
    weight = _weight_out_in(module)
    weights = torch.split(weight, list(sizes), dim=0)
    biases = torch.split(module.bias, list(sizes)) if module.bias is not None else [None] * len(sizes)
    return SplitProjection({n: _linear_from(w, b) for n, w, b in zip(names, weights, biases)})


def _split_interleaved(module: nn.Linear, names: Sequence[str], heads: int) -> SplitProjection:
    """Rows grouped per head as [part_0 | part_1 | ...] of head_size each."""
    parts = len(names)
    head_size = module.out_features // (heads * parts)
    weight = module.weight.view(heads, parts, head_size, module.in_features)
    bias = module.bias.view(heads, parts, head_size) if module.bias is not None else None
    linears = {}
    for index, name in enumerate(names):
        part_bias = bias[:, index].reshape(-1) if bias is not None else None
        linears[name] = _linear_from(weight[:, index].reshape(-1, module.in_features), part_bias)
    return SplitProjection(linears, heads=heads)


def _conv1d_to_linear(module: nn.Module) -> nn.Linear:
    if isinstance(module, nn.Linear):  # converted by an earlier split: leave it
        return module
    return _linear_from(module.weight.t(), module.bias)


def _head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def gpt2_rules(config: PretrainedConfig) -> SplitRules:
    d = config.hidden_size
    return {
        "attn.c_attn": lambda m: _split_rows(m, ("q", "k", "v"), (d, d, d)),
        "attn.c_proj": _conv1d_to_linear,
        "mlp.c_fc": _conv1d_to_linear,
        "mlp.c_proj": _conv1d_to_linear,
    }


def gpt_neox_rules(config: PretrainedConfig) -> SplitRules:
    heads = config.num_attention_heads
    return {"attention.query_key_value": lambda m: _split_interleaved(m, ("q", "k", "v"), heads)}


def phi3_rules(config: PretrainedConfig) -> SplitRules:
    head_dim = _head_dim(config)
    q_size = config.num_attention_heads * head_dim
    kv_size = (config.num_key_value_heads or config.num_attention_heads) * head_dim
    ffn = config.intermediate_size
    return {
        "self_attn.qkv_proj": lambda m: _split_rows(m, ("q", "k", "v"), (q_size, kv_size, kv_size)),
        "mlp.gate_up_proj": lambda m: _split_rows(m, ("gate", "up"), (ffn, ffn)),
    }


def split_fused_projections(model: nn.Module, rules: SplitRules) -> list[str]:
    """Replace the fused projections of `model` that `rules` name, in place; return the
    replaced names. `rules` come from the model's architecture entry (empty: nothing to do)."""
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, SplitProjection):
            continue  # already split: surgery is idempotent
        rule = next((r for path, r in rules.items() if name.endswith("." + path)), None)
        if rule is None or not hasattr(module, "weight"):
            continue
        replacement = rule(module)
        if replacement is module:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, replacement)
        replaced.append(name)
    return replaced
