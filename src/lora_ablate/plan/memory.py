"""A rough training-memory estimate for the dry-run plan, so a user sees before training
whether a run fits (e.g. Llama-3-8B on one GPU).

Bytes, by part:
- base weights: base parameters × 2 (bf16) or 4 (fp32), at the dtype the run holds them;
- LoRA: parameters × 4 each for weights, gradients and the two AdamW moments (fp32);
- head: the trainable fp32 copy with gradients and AdamW moments (16 bytes per parameter),
  plus the frozen original PEFT keeps beside it (at the base dtype);
- activations kept for the backward pass at train.batch_size B × task.max_length T, per
  layer: B·T·(9·h + 2·kv + f·i) values (layer-norm inputs and outputs, q/k/v, attention
  context and output, residuals, the FFN's inner activations: f = 4 with a gate, else 2)
  plus 2·B·heads·T² for the attention scores and their softmax; then the embeddings
  (B·T·h) and the output: label-word scoring keeps fp32 logits over the vocabulary at every
  position (B·T·vocab·4), a classification head only B·labels. Values are 2 bytes under
  bf16, else 4. All layers count, since the backward pass runs through every layer above
  the lowest adapted one; optimizer workspace, the CUDA context and fragmentation are not
  included (add ~1 GiB on a GPU).
"""

from dataclasses import asdict, dataclass

import torch
from transformers import PretrainedConfig

BYTES = {"bf16": 2, "fp32": 4}


def resolved_precision(precision: str) -> str:
    """What `train.precision` means on this machine: `auto` is bf16 on a GPU that has it."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return precision


@dataclass(frozen=True)
class Shape:
    """The numbers of a Transformer the activation formula needs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_width: int  # output width of k and v (smaller than hidden under GQA)
    vocab: int
    gated: bool

    @classmethod
    def of(cls, config: PretrainedConfig, gated: bool) -> "Shape":
        hidden = config.hidden_size
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        intermediate = next(
            (v for v in (getattr(config, k, None) for k in ("intermediate_size", "ffn_dim", "n_inner")) if v),
            4 * hidden,
        )
        return cls(config.num_hidden_layers, hidden, intermediate, heads, kv_heads * head_dim, config.vocab_size, gated)


@dataclass(frozen=True)
class MemoryEstimate:
    precision: str
    batch_size: int
    seq_len: int
    base_weights_bytes: int
    lora_weights_bytes: int
    lora_grads_bytes: int
    lora_optimizer_bytes: int
    head_bytes: int
    activations_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(v for k, v in asdict(self).items() if k.endswith("_bytes"))

    def to_dict(self) -> dict:
        return asdict(self) | {"total_bytes": self.total_bytes, "total_gib": round(self.total_bytes / 2**30, 2)}


def activation_values(shape: Shape, batch: int, seq: int, label_words: bool, num_labels: int) -> tuple[int, int]:
    """(values at the activation dtype, fp32 logit values) kept for the backward pass."""
    tokens = batch * seq
    per_layer = tokens * (9 * shape.hidden + 2 * shape.kv_width + (4 if shape.gated else 2) * shape.intermediate)
    per_layer += 2 * batch * shape.heads * seq * seq
    logits = tokens * shape.vocab if label_words else batch * num_labels
    return shape.layers * per_layer + tokens * shape.hidden, logits


def estimate_memory(
    shape: Shape,
    *,
    base_params: int,
    lora_params: int,
    head_params: int,
    batch_size: int,
    seq_len: int,
    precision: str,
    label_words: bool,
    num_labels: int,
) -> MemoryEstimate:
    width = BYTES[precision]
    values, logits = activation_values(shape, batch_size, seq_len, label_words, num_labels)
    return MemoryEstimate(
        precision=precision,
        batch_size=batch_size,
        seq_len=seq_len,
        base_weights_bytes=base_params * width,
        lora_weights_bytes=lora_params * 4,
        lora_grads_bytes=lora_params * 4,
        lora_optimizer_bytes=lora_params * 8,
        head_bytes=head_params * (16 + width),
        activations_bytes=values * width + logits * 4,
    )
