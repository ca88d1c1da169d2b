"""Paired randomness: within a seed, every target set draws the same random numbers where
it can, so the difference between two target sets is the targets, not the dice.

- data order: `batches.train_index_batches` depends on (data, batch size, seed) only;
- each LoRA module's A: a generator keyed by (seed, module name), so `q` starts the same in
  `qv` and `qkv` (with a smaller rank, its rows are a prefix of the bigger one's);
- the head: the global RNG keyed by (seed, RandomStream.head) just before the model is built;
- dropout masks: the global RNG keyed by (seed, step, micro-batch) just before each forward,
  so the masks do not depend on how many random numbers earlier steps drew.
"""

import hashlib
import math
from enum import StrEnum

import torch
from torch import nn


class RandomStream(StrEnum):
    """The random streams keyed by seed (their names enter the derived seeds)."""

    head = "head"
    lora_A = "lora_A"
    dropout = "dropout"


def derived_seed(seed: int, *key: object) -> int:
    """A 63-bit seed from (seed, key...): sha256 of their text, stable across processes
    (Python's hash() of a str is salted per process)."""
    text = "\x1f".join(str(part) for part in (seed, *key))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def generator(seed: int, *key: object) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *key))


def seed_lora_init(model: nn.Module, seed: int) -> int:
    """Re-draw every LoRA A from a generator keyed by (seed, module name), with PEFT's own
    init (kaiming-uniform, a=sqrt(5)); B stays zero, so the model's output is unchanged.
    The name drops PEFT's wrapper prefix, so it is the base model's module path. Returns
    how many modules were re-drawn."""
    count = 0
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict):
            continue
        path = name.removeprefix("base_model.model.")
        for adapter, layer in lora_a.items():
            weight = layer.weight
            # Drawn on the CPU in fp32, then copied: the numbers do not depend on the device.
            fresh = torch.empty(weight.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator(seed, RandomStream.lora_A, adapter, path))
            with torch.no_grad():
                weight.copy_(fresh)
            count += 1
    return count
