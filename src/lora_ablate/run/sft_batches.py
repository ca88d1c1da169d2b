"""SFT token ids (data/sft.py) -> right-padded batches that say which positions the loss
needs: the position before each completion token (EOS included) predicts it, and no other
position gets logits (run/sft_loss.py)."""

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from lora_ablate.data.sft import SftEncoded


@dataclass(frozen=True)
class SftBatch:
    input_ids: torch.Tensor  # (rows, width), right-padded
    attention_mask: torch.Tensor  # (rows, width)
    rows: torch.Tensor  # (targets,) the row of each completion token
    positions: torch.Tensor  # (targets,) the position whose output predicts it
    targets: torch.Tensor  # (targets,) the completion token ids
    tokens: int  # real (non-pad) tokens, for throughput

    def to(self, device: torch.device) -> "SftBatch":
        """On `device`; pinned + non_blocking, so a training step does not wait for the copy."""
        if device.type == "cpu":
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.pin_memory().to(device, non_blocking=True)
        return SftBatch(**moved)


def collate_sft(items: Sequence[SftEncoded], pad_id: int) -> SftBatch:
    """Rows padded on the right (positions count from 0 in every row, no position ids
    needed); targets listed row by row, in order."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    rows, positions, targets = [], [], []
    for row, item in enumerate(items):
        length = len(item.input_ids)
        ids[row, :length] = torch.tensor(item.input_ids)
        mask[row, :length] = 1
        rows += [row] * item.completion_length
        positions += range(item.prompt_length - 1, length - 1)
        targets += item.input_ids[item.prompt_length :]
    return SftBatch(ids, mask, torch.tensor(rows), torch.tensor(positions), torch.tensor(targets), int(mask.sum()))


def length_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most `max_tokens` padded tokens
    and `max_rows` rows (evaluation: short sequences share big batches)."""
    batches, current, width = [], [], 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and (max(width, lengths[index]) * (len(current) + 1) > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current, width = [], 0
        current.append(index)
        width = max(width, lengths[index])
    if current:
        batches.append(current)
    return batches
