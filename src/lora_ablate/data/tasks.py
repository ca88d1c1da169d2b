"""A task's examples, from whichever source `task.source` names (data/sources/), split by
one deterministic, stratified, de-duplicating splitter, so every run of a sweep sees the
same test set (SFT tasks: prompt/completion pairs, split by data/sft.py); and the checks of
task settings a dry run can make without data."""

import codecs
import string
from dataclasses import dataclass

from lora_ablate.config.schema import TaskConfig, TaskFormat
from lora_ablate.data.sft import SftExample, split_sft_examples
from lora_ablate.data.sources import source_for
from lora_ablate.data.sources.prompt_templates import prompt_templates
from lora_ablate.data.splits import Example, split_examples
from lora_ablate.errors import ConfigError


@dataclass(frozen=True)
class TaskData:
    name: str
    label_names: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def load_task(cfg: TaskConfig) -> TaskData:
    """Read the task's examples and split them (see `split_examples`)."""
    check_task_config(cfg)
    source = source_for(cfg)
    raw = source.load(cfg)
    _check_two_classes(cfg, raw.label_names, raw.examples, source.describe(cfg))
    _check_num_labels(cfg, raw.label_names)
    sizes = {"train_size": cfg.train_size, "val_size": cfg.val_size, "test_size": cfg.test_size}
    train, validation, test = split_examples(raw.examples, **sizes, data_seed=cfg.data_seed)
    train = train + raw.train_only  # after the split: never in validation or test
    return TaskData(cfg.name, raw.label_names, train, validation, test)


@dataclass(frozen=True)
class SftTaskData:
    name: str
    train: list[SftExample]
    validation: list[SftExample]
    test: list[SftExample]


def load_sft_task(cfg: TaskConfig) -> SftTaskData:
    """Read an SFT task's (prompt, completion) examples and split them (data/sft.py)."""
    check_task_config(cfg)
    examples = source_for(cfg).load_sft(cfg)
    sizes = {"train_size": cfg.train_size, "val_size": cfg.val_size, "test_size": cfg.test_size}
    return SftTaskData(cfg.name, *split_sft_examples(examples, **sizes, data_seed=cfg.data_seed))


def check_task_data(cfg: TaskConfig) -> None:
    """Read, check and split the task's data, as a run will (the check before training)."""
    (load_sft_task if cfg.format == TaskFormat.sft else load_task)(cfg)


def data_identity(cfg: TaskConfig) -> str | None:
    """What the task's raw data is, for caches: the pinned archive of a packaged corpus,
    a local file's path, size and modification time; None for a hub dataset, whose
    content at an unpinned revision can change."""
    return source_for(cfg).identity(cfg)


def describe(cfg: TaskConfig) -> str:
    """How messages name the task's data, e.g. task.path='x.jsonl'."""
    return source_for(cfg).describe(cfg)


def _check_two_classes(cfg: TaskConfig, label_names: list[str], examples: list[Example], where: str) -> None:
    present = sorted({e.label for e in examples})
    if len(present) == 1:
        raise ConfigError(
            f"Every example of {where} has the same label ({label_names[present[0]]!r} in column "
            f"task.label_column={cfg.label_column!r}); a comparison needs at least two classes. Check "
            "task.label_column and the data."
        )


def _check_num_labels(cfg: TaskConfig, label_names: list[str]) -> None:
    if len(label_names) != cfg.num_labels:
        raise ConfigError(
            f"task.num_labels={cfg.num_labels} but task {cfg.name!r} has {len(label_names)} "
            f"labels ({', '.join(label_names)}); set task.num_labels={len(label_names)}."
        )


# --- config checks (no data needed, so a dry run can call them) ---------------------


def check_task_config(cfg: TaskConfig) -> None:
    """Raise ConfigError for task settings that cannot work, before reading any data (the
    schema, TaskConfig, has checked the source, the format, the sizes and max_length)."""
    source = source_for(cfg)
    source.check(cfg)
    _check_prompt_templates(cfg)
    _check_encoding(cfg.encoding)
    if cfg.format == TaskFormat.sft:  # no labels; a prompt template only where the source fills one
        if source.uses_prompt_template:
            if cfg.prompt_templates is not None:
                raise ConfigError(
                    f"task.prompt_templates is set, but {source.describe(cfg)} builds its prompts from "
                    f"task.prompt ({cfg.prompt!r}) over the text it provides; remove task.prompt_templates "
                    "(they select columns of local or hub data) or change task.prompt.")
            _check_prompt(cfg)
        return
    _check_labels(cfg)
    _check_prompt(cfg)
    if (known := source.label_names(cfg)) is not None:  # a pinned corpus: its labels are known now
        _check_num_labels(cfg, known)


def _check_encoding(encoding: object) -> None:
    try:
        # _is_text_encoding is False for bytes-to-bytes codecs such as base64 and zlib
        ok = isinstance(encoding, str) and getattr(codecs.lookup(encoding), "_is_text_encoding", True)
    except LookupError:
        ok = False
    if not ok:
        raise ConfigError(
            f"task.encoding={encoding!r} is not a text encoding Python knows; use e.g. utf-8 (the default), "
            "cp1252 or latin-1."
        )


def _check_labels(cfg: TaskConfig) -> None:
    names = None if cfg.label_names is None else list(cfg.label_names)
    if names is not None and (len(names) != cfg.num_labels or len(set(names)) != len(names)):
        raise ConfigError(
            f"task.label_names={names} does not fit task.num_labels={cfg.num_labels}; give "
            f"{cfg.num_labels} distinct names, one per label id in order."
        )
    words = None if cfg.label_words is None else list(cfg.label_words)
    if words is not None and (len(words) != cfg.num_labels or len(set(words)) != len(words) or not all(words)):
        raise ConfigError(
            f"task.label_words={words} does not fit task.num_labels={cfg.num_labels}; give {cfg.num_labels} "
            "distinct non-empty words, one per label id in order (with a leading space, e.g. ' positive')."
        )
    if cfg.format == TaskFormat.label_words and words is None:
        raise ConfigError("task.format='label_words' needs task.label_words, one word per label; set it or use task.format=head.")


def _check_prompt(cfg: TaskConfig) -> None:
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(cfg.prompt) if field is not None}
    except ValueError as err:
        raise ConfigError(f"task.prompt={cfg.prompt!r} is not a valid format string ({err}); write literal braces as '{{{{' and '}}}}'.") from err
    wanted = {"text", "text_pair"} if cfg.text_pair_column else {"text"}
    if fields != wanted:
        why = "task.text_pair_column is set" if cfg.text_pair_column else "{text_pair} needs task.text_pair_column"
        raise ConfigError(
            f"task.prompt={cfg.prompt!r} uses the fields {sorted(fields)}, but this task needs exactly "
            f"{sorted(wanted)} ({why}); write literal braces as '{{{{' and '}}}}'."
        )


def _check_prompt_templates(cfg: TaskConfig) -> None:
    """SFT prompts built from columns: parsed now, so a dry run rejects a bad template;
    a classification task's prompt is task.prompt."""
    if cfg.format == TaskFormat.sft:
        prompt_templates(cfg)
    elif cfg.prompt_templates is not None:
        raise ConfigError(
            f"task.prompt_templates={list(cfg.prompt_templates)} builds the prompts of SFT tasks (task.format=sft), "
            f"but task {cfg.name!r} is a classification task, whose prompt is task.prompt; remove it or set task.format=sft."
        )
