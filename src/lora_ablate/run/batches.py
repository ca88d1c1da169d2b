"""Examples -> token ids -> padded batches, for both task formats.

`head`: text (and pair) -> input_ids; the label is a class index.
`label_words`: prompt + label word; the loss covers the answer tokens only, and the
prediction is the label word with the highest log-likelihood. Sequences are padded on
the left so every answer ends at the last position, letting the model compute logits
for the last few positions only (`logits_to_keep`).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from lora_ablate.config.schema import TaskFormat
from lora_ablate.errors import ConfigError
from lora_ablate.data.tasks import Example


@dataclass(frozen=True)
class Encoded:
    """One example: token ids, its class, and for label words its candidate answers."""

    input_ids: list[int]  # head: the text; label_words: the prompt
    label: int
    answers: tuple[tuple[int, ...], ...] = ()  # label_words: token ids of each label word


def encode(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    task_format: str,
    max_length: int,
    prompt: str,
    label_words: Sequence[str] | None,
) -> list[Encoded]:
    if task_format == TaskFormat.head:
        texts = [e.text for e in examples]
        pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
        ids = tokenizer(
            texts, pairs, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        return [Encoded(i, e.label) for i, e in zip(ids, examples)]
    answers = _answer_ids(tokenizer, label_words)
    room = max_length - max(len(a) for a in answers)
    prompts = [prompt.format(text=e.text, text_pair=e.text_pair or "") for e in examples]
    # Keep the end of a long prompt: the question stands there.
    ids = tokenizer(prompts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return [Encoded(i[-room:], e.label, answers) for i, e in zip(ids, examples)]


def _answer_ids(tokenizer: PreTrainedTokenizerBase, label_words: Sequence[str] | None) -> tuple[tuple[int, ...], ...]:
    if not label_words:
        raise ConfigError("task.format=label_words needs task.label_words, one word per label (e.g. [' no', ' yes']).")
    answers = tuple(tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in label_words)
    if len(set(answers)) != len(answers) or not all(answers):
        raise ConfigError(f"task.label_words {list(label_words)} must tokenise to distinct, non-empty sequences.")
    return answers


@dataclass(frozen=True)
class Batch:
    tensors: dict[str, torch.Tensor]  # model inputs (and `labels` for the head format)
    labels: torch.Tensor  # class per example
    tokens: int  # real (non-pad) tokens, for throughput
    answer_mask: torch.Tensor | None = None  # label_words: which kept positions are answer tokens
    keep: int = 0  # label_words: how many final positions need logits
    candidates: torch.Tensor | None = None  # label_words, one token each: the label tokens to score


def collate_head(items: Sequence[Encoded], pad_id: int) -> Batch:
    lengths = torch.tensor([len(i.input_ids) for i in items])
    width = int(lengths.max())
    ids = torch.tensor([i.input_ids + [pad_id] * (width - len(i.input_ids)) for i in items])
    mask = (torch.arange(width) < lengths[:, None]).long()
    labels = torch.tensor([i.label for i in items])
    return Batch({"input_ids": ids, "attention_mask": mask, "labels": labels}, labels, int(lengths.sum()))


def collate_label_words(items: Sequence[Encoded], pad_id: int, *, all_answers: bool) -> Batch:
    """Left-padded prompt+answer rows: the gold answer per item (training) or every
    candidate answer per item, item-major (evaluation). When every label word is one
    token, evaluation needs no answer rows: one row per prompt scores all candidates."""
    if all_answers and all(len(a) == 1 for a in items[0].answers):
        return _collate_prompts(items, pad_id)
    rows = [
        (item.input_ids, answer)
        for item in items
        for answer in (item.answers if all_answers else (item.answers[item.label],))
    ]
    width = max(len(p) + len(a) for p, a in rows)
    keep = max(len(a) for _, a in rows) + 1  # the position before the answer predicts its first token
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), keep - 1), pad_id, dtype=torch.long)
    answer_mask = torch.zeros((len(rows), keep - 1), dtype=torch.bool)
    for row, (prompt, answer) in enumerate(rows):
        sequence = list(prompt) + list(answer)
        ids[row, width - len(sequence) :] = torch.tensor(sequence)
        mask[row, width - len(sequence) :] = 1
        targets[row, keep - 1 - len(answer) :] = torch.tensor(answer)
        answer_mask[row, keep - 1 - len(answer) :] = True
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # absolute positions ignore the left padding
    tensors = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "answer_ids": targets}
    labels = torch.tensor([i.label for i in items])
    return Batch(tensors, labels, int(mask.sum()), answer_mask, keep)


def _collate_prompts(items: Sequence[Encoded], pad_id: int) -> Batch:
    width = max(len(i.input_ids) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, width - len(item.input_ids) :] = torch.tensor(item.input_ids)
        mask[row, width - len(item.input_ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    candidates = torch.tensor([answer[0] for answer in items[0].answers])
    labels = torch.tensor([i.label for i in items])
    tensors = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    return Batch(tensors, labels, int(mask.sum()), keep=1, candidates=candidates)


def permutation(n: int, *key: int) -> list[int]:
    """A permutation of range(n) fixed by the non-negative integers `key` alone (tuple
    hashes of ints do not depend on PYTHONHASHSEED; -1 and -2 hash alike, hence no negatives)."""
    generator = torch.Generator().manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=generator).tolist()


def train_index_batches(lengths: Sequence[int], batch_size: int, seed: int, group: int = 16) -> Iterator[list[int]]:
    """Endless stream of index batches that depends on (data, batch_size, seed) only, so
    every target set of a seed trains on the same batches in the same order and the
    comparison pairs. Each epoch's permutation is cut into windows of `group` batches; a
    window is sorted by length before it is cut (less padding) and its batches are
    shuffled, so lengths do not trend within an epoch. An epoch's tail rolls over."""
    window = batch_size * group
    epoch, windows, pending = 0, 0, []
    while True:
        pending.extend(permutation(len(lengths), seed, 0, epoch))
        epoch += 1
        while len(pending) >= batch_size:
            take = pending[:window]
            take = take[: len(take) - len(take) % batch_size]
            pending = pending[len(take) :]
            by_length = sorted(take, key=lambda i: lengths[i])
            batches = [by_length[k : k + batch_size] for k in range(0, len(by_length), batch_size)]
            windows += 1
            for b in permutation(len(batches), seed, 1, windows):
                yield batches[b]


def eval_index_batches(items: Sequence[Encoded], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most `max_tokens` padded tokens:
    short sequences share big batches, long ones small batches."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    batches, current, width = [], [], 0
    for index in order:
        length = len(items[index].input_ids) + max((len(a) for a in items[index].answers), default=0)
        rows = max(1, len(items[index].answers))
        if current and (max(width, length) * (len(current) + 1) * rows > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current, width = [], 0
        current.append(index)
        width = max(width, length)
    if current:
        batches.append(current)
    return batches
