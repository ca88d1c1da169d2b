"""The interface every task source implements: what it checks and knows without data,
and how it reads its examples. data/tasks.py splits what `load` returns, whatever the source."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sft import SftExample
from lora_ablate.data.splits import Example
from lora_ablate.errors import ConfigError


@dataclass(frozen=True)
class RawExamples:
    """A task's examples before splitting, and their label names in label-id order."""

    label_names: list[str]
    examples: list[Example]  # split into train, validation and test
    train_only: list[Example] = field(default_factory=list)  # added to the training split after it


class Source(ABC):
    """One value of `task.source`. A module of this package that defines `SOURCE`, an
    instance of a subclass, is found by the registry (sources/__init__.py)."""

    kind: ClassVar[TaskSource]
    # Whether its SFT prompts are task.prompt filled with {text} (checked like a classification
    # prompt); local and hub SFT files hold their prompts.
    uses_prompt_template: ClassVar[bool] = False

    def check(self, cfg: TaskConfig) -> None:
        """Raise ConfigError for settings this source needs that cannot work (no data read)."""

    def label_names(self, cfg: TaskConfig) -> list[str] | None:
        """The labels, when the source knows them without reading data (a pinned corpus);
        a ConfigError if task.label_names disagrees with them."""
        return None

    def identity(self, cfg: TaskConfig) -> str | None:
        """What the raw data is, for caches; None when its content can change unseen."""
        return None

    def describe(self, cfg: TaskConfig) -> str:
        """How messages name the data."""
        return f"task {cfg.name!r}"

    @abstractmethod
    def load(self, cfg: TaskConfig) -> RawExamples:
        """Read the examples (fetching a packaged corpus on first use)."""

    def load_sft(self, cfg: TaskConfig) -> list[SftExample]:
        """The (prompt, completion) examples of an SFT task (task.format=sft)."""
        raise ConfigError(
            f"task.format=sft needs prompts and completions, which {self.describe(cfg)} (task.source="
            f"{self.kind.value}) does not provide; SFT tasks read task.source=local files (task=local "
            "task.path=FILE.jsonl with prompt/completion or messages columns) or hub data sets (task.source=hub, "
            "e.g. task=alpaca)."
        )


def fixed_names(cfg: TaskConfig, names: list[str], corpus: str) -> list[str]:
    """The corpus's own label names; task.label_names may only repeat them."""
    if cfg.label_names is not None and list(cfg.label_names) != names:
        raise ConfigError(
            f"task.label_names={list(cfg.label_names)} does not match the labels of {corpus}, "
            f"which are {names} in this order; set it to that list or remove it."
        )
    return names
