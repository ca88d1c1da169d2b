"""The plan expressed through PEFT: exact module names, per-module ranks and alphas."""

import re
from collections import Counter

from peft import LoraConfig

from lora_ablate.config.schema import LoraSettings
from lora_ablate.plan.layout import Plan


def module_alpha(rank: int, lora: LoraSettings) -> float:
    """alpha grows with rank so the update's scale (alpha / rank) is the same for every
    module and target set; rsLoRA instead keeps alpha fixed and scales by alpha / sqrt(rank)."""
    return lora.rslora_alpha if lora.use_rslora else lora.alpha_over_rank * rank


def lora_config(plan: Plan, lora: LoraSettings) -> LoraConfig:
    ranks = Counter(m.rank for m in plan.modules)
    default_rank = ranks.most_common(1)[0][0]
    # PEFT matches pattern keys as regexes anchored at a name boundary: escape the dots.
    rank_pattern = {re.escape(m.name): m.rank for m in plan.modules if m.rank != default_rank}
    alpha_pattern = {
        re.escape(m.name): module_alpha(m.rank, lora)
        for m in plan.modules
        if module_alpha(m.rank, lora) != module_alpha(default_rank, lora)
    }
    return LoraConfig(
        r=default_rank,
        lora_alpha=module_alpha(default_rank, lora),
        target_modules=[m.name for m in plan.modules],
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        lora_dropout=lora.dropout,
        use_rslora=lora.use_rslora,
        bias="none",
        modules_to_save=list(plan.head_modules) or None,
    )
