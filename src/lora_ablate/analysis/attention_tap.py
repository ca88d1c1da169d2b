"""An attention function that exposes the attention probabilities: it records them per
layer, or replaces them with ones recorded earlier (attention patching).

It is registered with transformers' attention interface under PROBE_ATTENTION (with the
eager additive mask) and switched on for the probe passes only, by setting the model
config's `_attn_implementation`. Its arithmetic is eager attention's: softmax(Q Kᵀ · scale
+ mask) V, keys and values repeated for grouped-query heads. Models whose attention does
not go through the interface (e.g. DeBERTa) never call it: `Tap.layers` stays empty and
the attention probes report themselves unavailable.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

PROBE_ATTENTION = "lora_ablate_probe"
TAP_ATTRIBUTE = "_lora_ablate_tap"


@dataclass
class Tap:
    """What the attention function does on this pass: `record` stores each layer's
    probabilities, `patch` uses the stored ones instead of its own."""

    mode: str = "record"  # record | patch | off
    layers: dict[int, int] = field(default_factory=dict)  # id(attention module) -> layer index
    probs: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (batch, heads, q, k)

    def layer_of(self, module: nn.Module) -> int:
        return self.layers.setdefault(id(module), len(self.layers))  # order of first call = depth


def probe_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    repeats = query.shape[1] // key.shape[1]  # grouped-query attention: shared key/value heads
    if repeats > 1:
        key, value = key.repeat_interleave(repeats, dim=1), value.repeat_interleave(repeats, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = nn.functional.softmax(scores.float(), dim=-1).to(query.dtype)
    tap: Tap | None = getattr(module, TAP_ATTRIBUTE, None)
    if tap is not None:
        layer = tap.layer_of(module)
        if tap.mode == "record":
            tap.probs[layer] = probs.detach()
        elif tap.mode == "patch":
            probs = tap.probs[layer].to(probs.dtype)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def register() -> None:
    """Make PROBE_ATTENTION a valid attn_implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(PROBE_ATTENTION, probe_attention)
    AttentionMaskInterface.register(PROBE_ATTENTION, eager_mask)


def _configs(model: nn.Module) -> list:
    seen, configs = set(), []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation") and id(config) not in seen:
            seen.add(id(config))
            configs.append(config)
    return configs


@contextmanager
def tapped(model: nn.Module, tap: Tap) -> Iterator[Tap]:
    """The model's attention computed by `probe_attention` with `tap` attached to every
    module, then the model's own implementation and no tap again."""
    register()
    configs = _configs(model)
    before = [c._attn_implementation for c in configs]
    modules = list(model.modules())
    try:
        for config in configs:
            config._attn_implementation = PROBE_ATTENTION
        for module in modules:
            setattr(module, TAP_ATTRIBUTE, tap)
        yield tap
    finally:
        for config, implementation in zip(configs, before):
            config._attn_implementation = implementation
        for module in modules:
            if TAP_ATTRIBUTE in module.__dict__:
                delattr(module, TAP_ATTRIBUTE)
