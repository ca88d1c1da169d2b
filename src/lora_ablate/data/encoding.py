"""Examples -> token ids, for both task formats (batching them is run/batches.py's job).

`head`: text (and pair) -> input_ids; the label is a class index.
`label_words`: the prompt's ids, and the ids of every label word as candidate answers;
a long prompt keeps its end, where the question stands.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lora_ablate.config.schema import TaskFormat
from lora_ablate.data.splits import Example
from lora_ablate.errors import ConfigError


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
    ids = tokenizer(prompts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return [Encoded(i[-room:], e.label, answers) for i, e in zip(ids, examples)]


def _answer_ids(tokenizer: PreTrainedTokenizerBase, label_words: Sequence[str] | None) -> tuple[tuple[int, ...], ...]:
    if not label_words:
        raise ConfigError("task.format=label_words needs task.label_words, one word per label (e.g. [' no', ' yes']).")
    answers = tuple(tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in label_words)
    if len(set(answers)) != len(answers) or not all(answers):
        raise ConfigError(f"task.label_words {list(label_words)} must tokenise to distinct, non-empty sequences.")
    return answers
