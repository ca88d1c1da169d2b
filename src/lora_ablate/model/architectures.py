"""The architecture registry: for each supported `model_type`, one `Architecture` says
where each logical matrix lives, whether the model is an encoder (classification head) or
a decoder (label words), and how its fused projections are split. The logical matrices
and target sets are in lora_ablate.target_sets (torch-free; re-exported here).

An architecture's matrix map gives, for each matrix, the module path *inside one block*
(after `surgery` has split fused projections). A module adapts matrix M when its full
name is `<...>.<layer index>.<path of M>`, which also yields its layer.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from transformers import PretrainedConfig

from lora_ablate.errors import ConfigError
from lora_ablate.target_sets import FFN, FFN_MATRICES, MATRICES, TARGET_SETS, target_set_name
from lora_ablate.model.surgery import RuleBuilder, SplitRules, gpt2_rules, gpt_neox_rules, phi3_rules


@dataclass(frozen=True)
class Architecture:
    """What the planner, the loader and surgery need to know about one model_type."""

    matrices: Mapping[str, str]  # matrix -> module path inside one block, after splitting
    encoder: bool  # bidirectional encoder: a classification head; else a decoder: label words
    split: RuleBuilder | None = None  # builds surgery's rules for its fused projections

    def split_rules(self, config: PretrainedConfig) -> SplitRules:
        """The rules that split this model's fused projections (none when it has none)."""
        return self.split(config) if self.split is not None else {}


_LLAMA = Architecture(
    matrices={
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
    encoder=False,
)
_BERT = Architecture(
    matrices={
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "o": "attention.output.dense",
        "ffn_up": "intermediate.dense",
        "ffn_down": "output.dense",
    },
    encoder=True,
)

ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    # GPT-2's fused c_attn is split into c_attn.q/.k/.v, and its Conv1D layers become Linear.
    "gpt2": Architecture(
        matrices={
            "q": "attn.c_attn.q",
            "k": "attn.c_attn.k",
            "v": "attn.c_attn.v",
            "o": "attn.c_proj",
            "ffn_up": "mlp.c_fc",
            "ffn_down": "mlp.c_proj",
        },
        encoder=False,
        split=gpt2_rules,
    ),
    "gpt_neox": Architecture(
        matrices={
            "q": "attention.query_key_value.q",
            "k": "attention.query_key_value.k",
            "v": "attention.query_key_value.v",
            "o": "attention.dense",
            "ffn_up": "mlp.dense_h_to_4h",
            "ffn_down": "mlp.dense_4h_to_h",
        },
        encoder=False,
        split=gpt_neox_rules,
    ),
    "phi3": Architecture(
        matrices={
            "q": "self_attn.qkv_proj.q",
            "k": "self_attn.qkv_proj.k",
            "v": "self_attn.qkv_proj.v",
            "o": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_up_proj.gate",
            "ffn_up": "mlp.gate_up_proj.up",
            "ffn_down": "mlp.down_proj",
        },
        encoder=False,
        split=phi3_rules,
    ),
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "deberta-v2": Architecture(
        matrices={
            "q": "attention.self.query_proj",
            "k": "attention.self.key_proj",
            "v": "attention.self.value_proj",
            "o": "attention.output.dense",
            "ffn_up": "intermediate.dense",
            "ffn_down": "output.dense",
        },
        encoder=True,
    ),
    "opt": Architecture(
        matrices={
            "q": "self_attn.q_proj",
            "k": "self_attn.k_proj",
            "v": "self_attn.v_proj",
            "o": "self_attn.out_proj",
            "ffn_up": "fc1",
            "ffn_down": "fc2",
        },
        encoder=False,
    ),
}


def split_rules_for(config: PretrainedConfig) -> SplitRules:
    """Surgery's rules for this model's fused projections: none for a model_type that has
    none, or that is not registered (a user's matrix map then names unfused modules)."""
    architecture = ARCHITECTURES.get(config.model_type)
    return architecture.split_rules(config) if architecture is not None else {}


def architecture_map(model_type: str, user_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """The matrix -> in-block module path map for `model_type`; a user map wins."""
    if user_map is not None and not isinstance(user_map, Mapping):
        raise ConfigError(
            f"model.matrix_map must map matrix names to module paths, e.g. "
            f"'{{q: attn.q_proj, v: attn.v_proj}}', got {user_map!r}."
        )
    if user_map:
        unknown = sorted(set(user_map) - set(MATRICES))
        if unknown:
            raise ConfigError(
                f"model.matrix_map names unknown matrices {unknown}; valid matrix names are "
                f"{', '.join(MATRICES)}, each mapped to a module path inside one block "
                "(e.g. {q: self_attn.q_proj, v: self_attn.v_proj})."
            )
        return dict(user_map)
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"model_type '{model_type}' has no architecture map; supported model types are "
            f"{', '.join(sorted(ARCHITECTURES))}. For another architecture give the map in config, "
            "e.g. model.matrix_map='{q: attn.q_proj, k: attn.k_proj, v: attn.v_proj, o: attn.o_proj}' "
            "(module paths inside one block)."
        )
    return dict(ARCHITECTURES[model_type].matrices)


def expand_matrices(requested: Sequence[str], arch_map: Mapping[str, str], model_type: str) -> list[str]:
    """Concrete matrices for a requested list (matrix names, `ffn`, or target-set names),
    in canonical order, each checked against what the architecture has."""
    if not requested:
        raise ConfigError(_valid_targets_message("targets.matrices is empty"))
    wanted: set[str] = set()
    for name in requested:
        if name in MATRICES:
            parts: Iterable[str] = (name,)
        elif name == FFN:
            parts = [m for m in FFN_MATRICES if m in arch_map]
        elif name in TARGET_SETS:
            parts = expand_matrices(TARGET_SETS[name], arch_map, model_type)
        else:
            raise ConfigError(_valid_targets_message(f"unknown target or matrix name '{name}'"))
        for matrix in parts:
            if matrix not in arch_map:
                raise ConfigError(
                    f"matrix '{matrix}' does not exist in model_type '{model_type}'; that architecture "
                    f"has {', '.join(m for m in MATRICES if m in arch_map)}."
                )
            wanted.add(matrix)
    return [m for m in MATRICES if m in wanted]


def target_set_label(matrices: Sequence[str], arch_map: Mapping[str, str], model_type: str) -> str:
    """The `targets` option name a concrete matrix set equals on this architecture
    (e.g. all FFN matrices plus q, k, v is `qkv_ffn`), else the matrices joined by '+'."""
    return target_set_name(matrices, lambda abstract: expand_matrices(abstract, arch_map, model_type))


def layer_pattern(module_path: str) -> re.Pattern[str]:
    """Matches full module names `<...>.<layer>.<module_path>`; group 1 is the layer."""
    return re.compile(rf"(?:^|\.)(\d+)\.{re.escape(module_path)}$")


def _valid_targets_message(problem: str) -> str:
    return (
        f"{problem}; valid targets are the options {', '.join(TARGET_SETS)} "
        f"or a list of matrices from {', '.join(MATRICES)} and '{FFN}' "
        "(e.g. targets=qv or targets.matrices=[q,v,ffn_down])."
    )
