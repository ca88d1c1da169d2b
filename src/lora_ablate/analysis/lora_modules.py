"""The LoRA layers of a PEFT model, matched to the plan's module names, and the one
knob the analyses turn: each layer's scaling (s · alpha / r)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class Adapted:
    name: str  # the plan's module name (inside the base model)
    matrix: str
    layer: int
    rank: int
    module: LoraLayer


def adapted_modules(model: nn.Module, plan_modules) -> list[Adapted]:
    """Every planned module with its PEFT LoRA layer, in plan order."""
    layers = {name.removeprefix(PEFT_PREFIX): m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    found = []
    for planned in plan_modules:
        module = layers.get(planned.name)
        if module is None:
            raise RuntimeError(f"planned module {planned.name} has no LoRA layer in the model")
        found.append(Adapted(planned.name, planned.matrix, planned.layer, planned.rank, module))
    return found


def delta_factors(module: LoraLayer) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, scaling) of the active adapter, so ΔW = scaling · B @ A, shaped (d_out, d_in)."""
    name = module.active_adapters[0]
    return module.lora_B[name].weight, module.lora_A[name].weight, float(module.scaling[name])


def base_weight(module: LoraLayer) -> torch.Tensor:
    """W as (d_out, d_in), whatever the layer's storage convention."""
    weight = module.get_base_layer().weight
    return weight.T if getattr(module, "fan_in_fan_out", False) else weight


@contextmanager
def adapter_weight(modules: list[Adapted], s: float) -> Iterator[None]:
    """Every LoRA update scaled by s (0: the base model with the trained head, 1: as trained)."""
    saved = [dict(a.module.scaling) for a in modules]
    try:
        for a in modules:
            for key in a.module.scaling:
                a.module.scaling[key] = s * a.module.scaling[key]
        yield
    finally:
        for a, scaling in zip(modules, saved):
            a.module.scaling.update(scaling)


@contextmanager
def merged(model: nn.Module, modules: list[Adapted]) -> Iterator[None]:
    """The adapter merged into the weights at its current scaling; afterwards the base
    weights are restored bit for bit (merge then unmerge alone leaves rounding behind)."""
    saved = [a.module.get_base_layer().weight.detach().clone() for a in modules]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for a, weight in zip(modules, saved):
                a.module.get_base_layer().weight.copy_(weight)
