"""Generative fine-tuning data (task.format=sft): (prompt, completion) examples, their
deterministic split, and their token ids.

Splitting: de-duplicated by prompt (one completion per prompt, the same whatever the file's
order), shuffled by `task.data_seed` alone, test carved first, then validation, then train;
no stratification (there are no classes). A train_size sweep nests its training sets.

Encoding: prompt ids (with the tokenizer's special tokens) + completion ids + EOS. When the
whole does not fit `task.max_length`, the prompt is cut from the LEFT (its end, next to the
completion, stays); a completion that leaves no room for a prompt token is never cut: the
example is dropped and counted per split (a warning, the run's record), and a split left
empty is an error.
"""

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from lora_ablate.data.splits import check_fit, check_sizes, normalised
from lora_ablate.errors import ConfigError

log = logging.getLogger(__name__)
Turn = tuple[str, str]  # (role, content) of one chat message


@dataclass(frozen=True)
class SftExample:
    """A prompt (plain text, or the chat turns before the answer) and the completion the
    model learns to generate after it."""

    prompt: str | tuple[Turn, ...]
    completion: str

    def key(self) -> str:
        """What makes two prompts the same, for de-duplication."""
        if isinstance(self.prompt, str):
            return normalised(self.prompt)
        return json.dumps([[role, normalised(content)] for role, content in self.prompt])


@dataclass(frozen=True)
class SftEncoded:
    """One example's token ids: prompt, then completion and EOS; the loss covers
    input_ids[prompt_length:], each token predicted from the position before it."""

    input_ids: list[int]
    prompt_length: int

    @property
    def completion_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


@dataclass(frozen=True)
class SftSplits:
    train: list[SftEncoded]
    validation: list[SftEncoded]
    test: list[SftEncoded]
    dropped: dict[str, int] = field(default_factory=dict)  # split -> completions too long for max_length


# --- splitting -------------------------------------------------------------------------


def split_sft_examples(
    examples: Sequence[SftExample], *, train_size: int | None, val_size: int, test_size: int, data_seed: int
) -> tuple[list[SftExample], list[SftExample], list[SftExample]]:
    """(train, validation, test), fixed by `data_seed` alone (see the module docstring)."""
    check_sizes(train_size, val_size, test_size)
    groups: dict[str, list[SftExample]] = {}
    for example in examples:
        groups.setdefault(example.key(), []).append(example)
    # One completion per prompt, and a canonical order, so the file's order plays no part.
    unique = [min(group, key=lambda e: e.completion) for _, group in sorted(groups.items())]
    check_fit(len(examples), len(unique), train_size, val_size, test_size,
              counted="distinct prompts", merged="merging {} repeated prompts")
    random.Random(f"lora-ablate/{data_seed}/sft").shuffle(unique)
    test, validation, rest = unique[:test_size], unique[test_size : test_size + val_size], unique[test_size + val_size :]
    train = rest if train_size is None else rest[:train_size]
    return train, validation, test


# --- token ids -------------------------------------------------------------------------


def encode_sft(
    splits: dict[str, Sequence[SftExample]], tokenizer: PreTrainedTokenizerBase, *, max_length: int, where: str
) -> SftSplits:
    """Each split's examples as token ids (see the module docstring for the truncation
    policy); `where` names the data in messages."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("The tokenizer of this model has no EOS token, which SFT appends to every completion; "
                          "use a model whose tokenizer defines eos_token.")
    encoded, dropped = {}, {}
    for name, examples in splits.items():
        if not examples:
            encoded[name], dropped[name] = [], 0
            continue
        # A chat template writes its own special tokens (BOS and turn markers); a plain prompt gets the tokenizer's.
        chat = any(not isinstance(e.prompt, str) for e in examples)
        prompts = tokenizer([prompt_text(e, tokenizer) for e in examples], add_special_tokens=not chat,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        completions = tokenizer([e.completion for e in examples], add_special_tokens=False,
                                return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        kept = []
        for prompt, completion in zip(prompts, completions):
            answer = [*completion, eos]
            room = max_length - len(answer)
            if room < 1:  # not even one prompt token to predict the first completion token from
                continue
            prompt = prompt[-room:]
            kept.append(SftEncoded([*prompt, *answer], len(prompt)))
        dropped[name] = len(examples) - len(kept)
        if not kept:
            raise ConfigError(
                f"Every completion of the {name} split of {where} is too long for task.max_length={max_length} "
                "(completions are never cut; each needs its tokens, EOS and at least one prompt token); raise "
                "task.max_length or shorten the completions."
            )
        encoded[name] = kept
    if any(dropped.values()):
        log.warning("dropped %s completions longer than task.max_length=%d allows (%s); prompts are cut from the "
                    "left, completions never", sum(dropped.values()), max_length,
                    ", ".join(f"{n} of {name}" for name, n in dropped.items()))
    return SftSplits(encoded["train"], encoded["validation"], encoded["test"], dropped)


def prompt_text(example: SftExample, tokenizer: PreTrainedTokenizerBase) -> str:
    """A plain prompt as is; chat turns through the tokenizer's own chat template, with the
    generation prompt that opens the assistant's turn."""
    if isinstance(example.prompt, str):
        return example.prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "task.messages_column is set, so each example is a chat rendered with the tokenizer's chat template, "
            f"but the tokenizer of this model ({type(tokenizer).__name__}, {tokenizer.name_or_path or 'built in'}) has "
            "none; use an instruction-tuned model whose tokenizer has one, or give the file prompt/completion "
            "columns (task.prompt_column, task.completion_column) instead."
        )
    turns = [{"role": role, "content": content} for role, content in example.prompt]
    return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
