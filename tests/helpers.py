"""Helpers shared by the tests (conftest.py holds only fixtures): Hydra composition
through the Python API, plans for saved config.json folders, and the shapes of real
architectures worked out from their config numbers (never from the code under test).
The command line is started only through cli_helpers."""

import copy
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lora_ablate.app.store import register_configs
from lora_ablate.config.schema import RunConfig
from lora_ablate.target_sets import TARGET_SETS

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# ---------------------------------------------------------------------------------------
# Hydra composition (the Python API; a fresh initialisation per call so no global state
# leaks into other test files)
# ---------------------------------------------------------------------------------------


def register_like_cli() -> None:
    """What `lora_ablate.app.cli.main` registers in Hydra's ConfigStore before composing."""
    register_configs()


def compose_run(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The RunConfig the CLI would build from these overrides."""
    register_like_cli()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def resolve(overrides: list[str] | tuple[str, ...] = ()):
    """compose + lora_ablate.plan.resolve.resolve_run (meta-device skeleton, no weights)."""
    from lora_ablate.plan.resolve import resolve_run

    return resolve_run(compose_run(overrides))


def plan_for(overrides: list[str] | tuple[str, ...] = ()):
    return resolve(overrides).plan


def mentions(text: str, number: int) -> bool:
    """Whether `text` names `number`, written plainly or with thousands separators."""
    return str(number) in text or f"{number:,}" in text


# ---------------------------------------------------------------------------------------
# Real architectures, as config.json folders, with the expected shapes from config numbers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """A real architecture's numbers and what the tests expect of it."""

    key: str
    model_type: str
    config: dict  # kwargs for AutoConfig.for_model
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    gated: bool  # has ffn_gate (SwiGLU)
    paths: dict  # matrix -> expected module path inside one block (after the split)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def shape(self, matrix: str) -> tuple[int, int]:
        """(d_in, d_out) of `matrix`, from the config numbers."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        return {
            "q": (h, h),
            "k": (h, kv),
            "v": (h, kv),
            "o": (h, h),
            "ffn_gate": (h, i),
            "ffn_up": (h, i),
            "ffn_down": (i, h),
        }[matrix]

    @property
    def ffn(self) -> tuple[str, ...]:
        return ("ffn_gate", "ffn_up", "ffn_down") if self.gated else ("ffn_up", "ffn_down")

    def size(self, matrix: str) -> int:
        """Parameters per unit of rank: d_in + d_out."""
        return sum(self.shape(matrix))


_BERT_PATHS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ffn_up": "intermediate.dense",
    "ffn_down": "output.dense",
}
_LLAMA_PATHS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_PHI3_PATHS = {
    "q": "self_attn.qkv_proj.q",
    "k": "self_attn.qkv_proj.k",
    "v": "self_attn.qkv_proj.v",
    "o": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_up_proj.gate",
    "ffn_up": "mlp.gate_up_proj.up",
    "ffn_down": "mlp.down_proj",
}

ARCHS: dict[str, Arch] = {
    a.key: a
    for a in [
        Arch("bert_base", "bert", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
             num_attention_heads=12), 768, 3072, 12, 12, 12, False, _BERT_PATHS),
        Arch("roberta_base", "roberta", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
             num_attention_heads=12, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
             pad_token_id=1, bos_token_id=0, eos_token_id=2), 768, 3072, 12, 12, 12, False, _BERT_PATHS),
        Arch("gpt2_124m", "gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
             768, 3072, 12, 12, 12, False,
             {"q": "attn.c_attn.q", "k": "attn.c_attn.k", "v": "attn.c_attn.v", "o": "attn.c_proj",
              "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}),
        Arch("pythia_160m", "gpt_neox", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
             num_attention_heads=12, vocab_size=50304), 768, 3072, 12, 12, 12, False,
             {"q": "attention.query_key_value.q", "k": "attention.query_key_value.k",
              "v": "attention.query_key_value.v", "o": "attention.dense", "ffn_up": "mlp.dense_h_to_4h",
              "ffn_down": "mlp.dense_4h_to_h"}),
        Arch("llama3_8b", "llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, vocab_size=128256), 4096, 14336, 32, 32, 8, True,
             _LLAMA_PATHS),
        Arch("qwen2_0_5b", "qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
             num_attention_heads=14, num_key_value_heads=2, vocab_size=151936), 896, 4864, 24, 14, 2, True,
             _LLAMA_PATHS),
        Arch("phi3_mini", "phi3", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, pad_token_id=32000,
             eos_token_id=32000, bos_token_id=1), 3072, 8192, 32, 32, 32, True, _PHI3_PATHS),
        Arch("phi3_gqa", "phi3", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, vocab_size=32064, pad_token_id=32000,
             eos_token_id=32000, bos_token_id=1), 3072, 8192, 32, 32, 8, True, _PHI3_PATHS),
        Arch("opt_125m", "opt", dict(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
             word_embed_proj_dim=768, vocab_size=50272), 768, 3072, 12, 12, 12, False,
             {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
              "ffn_up": "fc1", "ffn_down": "fc2"}),
        Arch("deberta_v3_base", "deberta-v2", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
             num_attention_heads=12, vocab_size=128100, relative_attention=True, pos_att_type=["p2c", "c2p"],
             position_buckets=256, share_att_key=True, max_relative_positions=-1, norm_rel_ebd="layer_norm",
             position_biased_input=False, type_vocab_size=0), 768, 3072, 12, 12, 12, False,
             {"q": "attention.self.query_proj", "k": "attention.self.key_proj", "v": "attention.self.value_proj",
              "o": "attention.output.dense", "ffn_up": "intermediate.dense", "ffn_down": "output.dense"}),
    ]
}

def roberta_param_counts(arch: Arch, num_labels: int) -> tuple[int, int]:
    """(base, head) parameters of RobertaForSequenceClassification, from config numbers:
    no pooler; the head is dense (h×h) + out_proj (h×labels)."""
    h, i, c = arch.hidden, arch.intermediate, arch.config
    embeddings = (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    head = (h * h + h) + (h * num_labels + num_labels)
    return embeddings + arch.layers * layer, head


def expected_matrices(arch: Arch, option: str) -> set[str]:
    out: set[str] = set()
    for m in TARGET_SETS[option]:
        out.update(arch.ffn if m == "ffn" else (m,))
    return out


def save_config(folder: Path, model_type: str, **kwargs) -> Path:
    """A config.json folder as save_pretrained writes it (no weights)."""
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, **kwargs).save_pretrained(folder)
    return folder


class PlanCache:
    """Plans (or the ConfigError raised) shared across test files.

    Hydra's compose costs ~0.3 s, so the big architecture × target matrix composes each
    architecture's config once and each `targets` option once, and puts the option's
    matrices (as Hydra composed them) into a copy of the architecture's RunConfig before
    resolve_run. `test_targets.py` checks separately that `targets=<option>` composes
    to exactly those matrices.
    """

    def __init__(self):
        self._configs: dict[tuple[str, ...], RunConfig] = {}
        self._plans: dict[tuple, object] = {}

    def config(self, overrides: tuple[str, ...]) -> RunConfig:
        if overrides not in self._configs:
            self._configs[overrides] = compose_run(overrides)
        return copy.deepcopy(self._configs[overrides])

    def option_matrices(self, option: str) -> list[str]:
        return list(self.config(("model=tiny_llama", f"targets={option}")).targets.matrices)

    def get(self, overrides: tuple[str, ...], option: str | None = None):
        """The plan for `overrides` (+ `targets=<option>`), or the ConfigError it raised."""
        from lora_ablate.errors import ConfigError
        from lora_ablate.plan.resolve import resolve_run

        key = (overrides, option)
        if key not in self._plans:
            cfg = self.config(overrides)
            if option is not None:
                cfg.targets.matrices = self.option_matrices(option)
            try:
                self._plans[key] = resolve_run(cfg).plan
            except ConfigError as err:
                self._plans[key] = err
        return self._plans[key]


def arch_overrides(folder: Path, *extra: str) -> tuple[str, ...]:
    return ("model=custom", f"model.name_or_path={folder}", *extra)


# ---------------------------------------------------------------------------------------
# Real (tiny, random-initialised, CPU) models for the PEFT and surgery tests
# ---------------------------------------------------------------------------------------


def real_model(resolved, num_labels: int, seed: int = 0):
    """The model `resolved` describes, with random weights, its fused projections split."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from lora_ablate.model.architectures import split_rules_for
    from lora_ablate.model.surgery import split_fused_projections

    config = copy.deepcopy(resolved.model_config)
    torch.manual_seed(seed)
    if resolved.task_format == "head":
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    split_fused_projections(model, split_rules_for(config))
    return model


def session_with_random_updates(overrides: list[str] | tuple[str, ...], *, only_layer: int | None = None):
    """(session, adapted modules, plan): a prepared, untrained run whose LoRA B matrices are
    random (B starts at zero), so every update is non-zero; `only_layer`: zero every other
    layer's update. For the analysis tests of both task kinds."""
    import torch

    from lora_ablate.analysis.lora_modules import adapted_modules
    from lora_ablate.plan.resolve import resolve_run
    from lora_ablate.run.session import prepare

    cfg = compose_run(overrides)
    resolved = resolve_run(cfg)
    session = prepare(cfg, resolved, torch.device("cpu"))
    modules = adapted_modules(session.model, resolved.plan.modules)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in modules:
            weight = a.module.lora_B[a.module.active_adapters[0]].weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
            if only_layer is not None and a.layer != only_layer:
                weight.zero_()
    session.model.eval()
    return session, modules, resolved.plan
