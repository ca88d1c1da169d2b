"""The SFT loss: next-token cross-entropy on completion tokens only. The model's body runs
on the whole sequence, but the LM head (the vocabulary projection, the largest matmul of a
small decoder) runs only on the positions that predict a completion token."""

import torch
import torch.nn.functional as F
from torch import nn

from lora_ablate.run.sft_batches import SftBatch


def body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body (hidden states out) and the LM head of a causal LM, through a
    PEFT wrapper: LoRA layers live inside the body's modules, so calling the body trains them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if head is None:
        raise RuntimeError(f"{type(base).__name__} has no LM head (output embeddings); SFT needs a causal LM")
    return base.base_model, head


def completion_token_nll(model: nn.Module, batch: SftBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL, argmax-correct) of every completion token of the batch, in float32, in the
    batch's target order."""
    body, head = body_and_head(model)
    hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    logits = head(hidden[batch.rows, batch.positions]).float()  # (targets, vocab): the only logits made
    nll = F.cross_entropy(logits, batch.targets, reduction="none")
    return nll, logits.argmax(-1) == batch.targets
