"""Exact match of greedy generation, for SFT tasks with a checkable answer
(task.max_new_tokens > 0).

Prompts are sorted by length and LEFT-padded into batches (the new tokens of every row then
start at the same column), generated greedily with the KV cache, each row stopping at EOS
or at the first stop string, and a batch ends as soon as all its rows have stopped. Only the
new tokens are decoded, cut at the first stop string. The gold answer is the example's own
completion tokens (EOS removed) decoded the same way, so the two texts differ only where the
model's tokens do. The answer is the text after the LAST task.answer_marker (none: the whole
text; a text without the marker has no answer and matches nothing), whitespace stripped and
collapsed.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sft import SftEncoded
from lora_ablate.run.sft_batches import length_batches


@dataclass(frozen=True)
class GenerationSettings:
    """How a task's answers are generated and compared (the task.* settings of that name)."""

    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()
    answer_marker: str | None = None

    @classmethod
    def from_task(cls, task: TaskConfig) -> "GenerationSettings | None":
        """None when the task has no checkable answer (task.max_new_tokens=0)."""
        if task.max_new_tokens <= 0:
            return None
        return cls(task.max_new_tokens, tuple(task.stop_strings), task.answer_marker)


# --- comparing texts -------------------------------------------------------------------


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


def final_answer(text: str, marker: str | None) -> str | None:
    """The text after the last `marker` (the whole text when None), stripped and with runs of
    whitespace collapsed to one space; None when the marker is set and absent."""
    if marker is not None:
        at = text.rfind(marker)
        if at < 0:
            return None
        text = text[at + len(marker):]
    return " ".join(text.split())


def is_exact_match(generated: str, gold: str, marker: str | None) -> bool:
    answer = final_answer(generated, marker)
    return answer is not None and answer == final_answer(gold, marker)


# --- generating ------------------------------------------------------------------------


class StopAtStrings(StoppingCriteria):
    """Per row: whether the text generated after the prompt holds a stop string. Decoding
    the new tokens each step costs little next to a forward pass, and works for any
    tokenizer (a stop string may end inside a token, e.g. ".\\n\\n")."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_strings: Sequence[str], prompt_width: int):
        self.tokenizer, self.stop_strings, self.prompt_width = tokenizer, tuple(stop_strings), prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([any(s in text for s in self.stop_strings) for text in texts], device=input_ids.device)


def decode_new(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], eos_id: int) -> str:
    """The text of generated (or gold) tokens up to the first EOS."""
    ids = list(ids)
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


@torch.no_grad()
def generate_completions(model: nn.Module, prompts: Sequence[Sequence[int]], *, tokenizer: PreTrainedTokenizerBase,
                         settings: GenerationSettings, pad_id: int, eos_id: int, device: torch.device,
                         autocast_dtype: torch.dtype | None, max_tokens: int, max_rows: int) -> list[str]:
    """Each prompt's greedy continuation (new tokens only, up to EOS, cut at the first stop
    string), in the order of `prompts`. Batches hold at most `max_rows` rows and
    `max_tokens` tokens, counting each row's prompt and max_new_tokens."""
    was_training = model.training
    model.eval()
    config = GenerationConfig(do_sample=False, num_beams=1, use_cache=True, max_new_tokens=settings.max_new_tokens,
                              eos_token_id=eos_id, pad_token_id=pad_id)
    texts: list[str] = [""] * len(prompts)
    for indices in length_batches([len(p) + settings.max_new_tokens for p in prompts], max_tokens, max_rows):
        width = max(len(prompts[i]) for i in indices)
        ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, index in enumerate(indices):  # left padding: every row's prompt ends at column width-1
            length = len(prompts[index])
            ids[row, width - length:] = torch.tensor(list(prompts[index]))
            mask[row, width - length:] = 1
        stop = StoppingCriteriaList([StopAtStrings(tokenizer, settings.stop_strings, width)]) if settings.stop_strings else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                                 stopping_criteria=stop)
        for row, index in enumerate(indices):
            texts[index] = cut_at_stop(decode_new(tokenizer, out[row, width:].tolist(), eos_id), settings.stop_strings)
    model.train(was_training)
    return texts


def exact_match_bits(model: nn.Module, items: Sequence[SftEncoded], *, tokenizer: PreTrainedTokenizerBase,
                     settings: GenerationSettings, pad_id: int, device: torch.device,
                     autocast_dtype: torch.dtype | None, max_tokens: int, max_rows: int) -> list[int]:
    """1 where the greedy generation from an example's prompt has the gold answer, in the
    order of `items` (the gold: the example's completion tokens before its closing EOS)."""
    eos_id = tokenizer.eos_token_id  # what data/sft.py closes every completion with
    generated = generate_completions(
        model, [item.input_ids[: item.prompt_length] for item in items], tokenizer=tokenizer, settings=settings,
        pad_id=pad_id, eos_id=eos_id, device=device, autocast_dtype=autocast_dtype, max_tokens=max_tokens,
        max_rows=max_rows)
    golds = [decode_new(tokenizer, item.input_ids[item.prompt_length: -1], eos_id) for item in items]
    return [int(is_exact_match(text, gold, settings.answer_marker)) for text, gold in zip(generated, golds)]
