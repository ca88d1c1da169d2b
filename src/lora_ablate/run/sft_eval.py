"""SFT evaluation on a split: token-weighted loss, perplexity and token accuracy over all
completion tokens, and each example's summed NLL and token count for paired statistics."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from lora_ablate.data.sft import SftEncoded
from lora_ablate.records import ExampleLosses
from lora_ablate.run.sft_batches import collate_sft, length_batches
from lora_ablate.run.sft_loss import completion_token_nll


@torch.no_grad()
def evaluate_sft(model: nn.Module, items: Sequence[SftEncoded], *, pad_id: int, device: torch.device,
                 autocast_dtype: torch.dtype | None, max_tokens: int, max_rows: int) -> tuple[dict[str, float], ExampleLosses]:
    """({loss, perplexity, token_accuracy}, per-example losses in the order of `items`)."""
    was_training = model.training
    model.eval()
    nll_sums = torch.zeros(len(items), dtype=torch.float64)
    correct = torch.zeros(len(items), dtype=torch.long)
    for indices in length_batches([len(item.input_ids) for item in items], max_tokens, max_rows):
        batch = collate_sft([items[i] for i in indices], pad_id).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            nll, hit = completion_token_nll(model, batch)
        rows = torch.tensor(indices)
        nll_sums[rows] = torch.zeros(len(indices), dtype=torch.float64, device=nll.device).index_add_(
            0, batch.rows, nll.double()).cpu()
        correct[rows] = torch.zeros(len(indices), dtype=torch.long, device=nll.device).index_add_(
            0, batch.rows, hit.long()).cpu()
    model.train(was_training)
    tokens = [item.completion_length for item in items]
    total_tokens = sum(tokens)
    loss = float(nll_sums.sum()) / total_tokens
    metrics = {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
               "token_accuracy": int(correct.sum()) / total_tokens}
    return metrics, ExampleLosses(nll_sums.tolist(), tokens, correct.tolist())
