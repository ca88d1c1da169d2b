"""Records (a user's file, a hub split) -> SFT examples: prompt/completion columns, prompts
built from several columns (task.prompt_templates), or a column of chat messages whose last
assistant turn is the completion. Every bad cell is named with its row."""

from collections.abc import Sequence
from typing import Any

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sft import SftExample, Turn
from lora_ablate.data.sources.prompt_templates import SETTING, PromptTemplate, prompt_templates, render_prompt
from lora_ablate.data.sources.rows import Row
from lora_ablate.errors import ConfigError


def sft_columns(cfg: TaskConfig) -> dict[str, str]:
    """The settings naming the columns an SFT task reads, and their values (the columns of
    task.prompt_templates: `check_columns`)."""
    if cfg.messages_column:
        return {"task.messages_column": cfg.messages_column}
    if cfg.prompt_templates is not None:
        return {"task.completion_column": cfg.completion_column}
    return {"task.prompt_column": cfg.prompt_column, "task.completion_column": cfg.completion_column}


def read_columns(cfg: TaskConfig) -> list[str]:
    """Every column an SFT task reads: its settings' and its prompt templates'."""
    templated = [column for template in prompt_templates(cfg) for column in template.columns]
    return list(dict.fromkeys([*sft_columns(cfg).values(), *templated]))


def check_columns(cfg: TaskConfig, columns: Sequence[str], data_name: str, line: str) -> None:
    """A ConfigError naming the first column the task reads that `columns` lacks (`line`
    says where those columns were seen, e.g. "its header, line 1" or "split 'train'")."""
    for setting, column in sft_columns(cfg).items():
        if column not in columns:
            raise missing_column(setting, column, columns, data_name, line)
    for index, template in enumerate(prompt_templates(cfg)):
        if missing := [column for column in template.columns if column not in columns]:
            raise ConfigError(
                f"{SETTING}[{index}]={template.text!r} uses the field {{{missing[0]}}}, which is not a column of "
                f"{data_name} (columns on {line}: {', '.join(map(str, columns)) or 'none'}); use only those "
                "columns as fields, or fix the data."
            )


def missing_column(setting: str, column: str, columns: Sequence[str], file_name: str, line: str) -> ConfigError:
    """e.g. task.completion_column='completion' is not a column of x.jsonl (columns on line 1: prompt, answer)."""
    return ConfigError(
        f"{setting}={column!r} is not a column of {file_name} (columns on {line}: "
        f"{', '.join(map(str, columns)) or 'none'}); set {setting} to one of those, or fix the file."
    )


def sft_examples(rows: Sequence[Row], cfg: TaskConfig, file_name: str) -> list[SftExample]:
    """One example per row, checking that the columns exist and hold text (or chats)."""
    templates = prompt_templates(cfg)
    wanted = read_columns(cfg)
    examples = []
    for where, record in rows:
        if any(column not in record for column in wanted):
            check_columns(cfg, list(record), file_name, where.split(" of ")[0])
        if cfg.messages_column:
            examples.append(_chat_example(record[cfg.messages_column], where, cfg.messages_column))
        else:
            examples.append(SftExample(_prompt(record, where, cfg, templates),
                                       _text(record[cfg.completion_column], where, cfg.completion_column)))
    return examples


def _prompt(record: dict[str, Any], where: str, cfg: TaskConfig, templates: list[PromptTemplate]) -> str:
    if templates:
        return render_prompt(templates, record, where)
    return _text(record[cfg.prompt_column], where, cfg.prompt_column)


def _text(value: Any, where: str, column: str) -> str:
    """The cell as written (spaces matter to a tokenizer), if it holds any text."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"The {column!r} value on {where} is {value!r}; every SFT example needs a non-empty text there.")
    return value


def _chat_example(value: Any, where: str, column: str) -> SftExample:
    """The turns before the last message, which must be the assistant's, and its content."""
    shape = ("a list of messages, each an object with a 'role' and a text 'content', ending with the "
             "assistant's answer (the completion)")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"The {column!r} value on {where} is {_short(value)}; it must be {shape}.")
    turns: list[Turn] = []
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ConfigError(f"The {column!r} value on {where} holds the message {_short(message)}; it must be {shape}.")
        turns.append((message["role"], message["content"]))
    if turns[-1][0] != "assistant" or not turns[-1][1].strip():
        raise ConfigError(f"The {column!r} value on {where} ends with a {turns[-1][0]!r} message"
                          f"{'' if turns[-1][0] != 'assistant' else ' without text'}; it must be {shape}.")
    return SftExample(tuple(turns[:-1]), turns[-1][1])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
