"""How target sets and groups are ordered and named in every table, figure and note:
the conventional target sets first (the LoRA paper's Table 5 order), others after them
alphabetically; a group by its non-default labels."""

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lora_ablate.labels import GROUP, LABEL_DEFAULTS

# Display order of the conventional target sets (the LoRA paper's Table 5 order first).


TARGET_ORDER = ("q", "k", "v", "o", "qk", "qv", "kv", "qkv", "qkvo", "ffn", "qkv_ffn", "all")


def target_order(target_sets: pd.Series) -> pd.Series:
    """Sort key: conventional target sets in TARGET_ORDER, then others alphabetically."""
    known = {name: i for i, name in enumerate(TARGET_ORDER)}
    unknown = sorted(set(target_sets.dropna()) - set(known))
    others = {name: len(known) + i for i, name in enumerate(unknown)}
    return target_sets.map(lambda name: known.get(name, others.get(name, 10**6)))


def group_label(key: Sequence[Any], names: Sequence[str] = GROUP) -> str:
    """"model=m, task=t, budget=reference" for a group key, labels at their defaults left out."""
    return ", ".join(f"{name}={value}" for name, value in zip(names, key)
                     if not (name in LABEL_DEFAULTS and value in (LABEL_DEFAULTS[name], None)))
