"""task.prompt_templates: SFT prompts built from several columns (e.g. Alpaca's instruction
and input). Each template is a format string whose fields are plain column names; a row's
prompt is the first template whose columns all hold text there, so a data set whose optional
column is often empty (Alpaca's input) keeps a second, shorter template for those rows.

Templates are parsed here and rendered by joining their literal text and the cells: no
str.format (whose '{x.attr}' and '{x[0]}' reach into objects), nothing evaluated."""

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lora_ablate.config.schema import TaskConfig
from lora_ablate.errors import ConfigError

SETTING = "task.prompt_templates"
PLAIN_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_ -]*")  # a column name: no '.', '[', '!' or ':'


@dataclass(frozen=True)
class PromptTemplate:
    """One template: literal text and column names in order (a None column ends the text)."""

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal text, then the column whose cell follows it)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(column for _, column in self.parts if column is not None))

    def render(self, record: Mapping[str, Any], where: str) -> str | None:
        """The prompt for this row; None when one of its columns is empty there (the next
        template applies). The caller has checked that every column exists."""
        cells = {column: cell_text(record[column], column, where) for column in self.columns}
        if any(cell is None for cell in cells.values()):
            return None
        return "".join(literal + (cells[column] if column is not None else "") for literal, column in self.parts)


def prompt_templates(cfg: TaskConfig) -> list[PromptTemplate]:
    """The parsed templates ([] when unset); a ConfigError for one that cannot work, before
    any data is read."""
    if cfg.prompt_templates is None:
        return []
    if cfg.messages_column:
        raise ConfigError(
            f"{SETTING} and task.messages_column={cfg.messages_column!r} are both set; a chat's messages are "
            f"its prompt, so remove one of them ({SETTING} builds prompts from columns of plain text)."
        )
    if not cfg.prompt_templates:
        raise ConfigError(f"{SETTING}=[] holds no template; give at least one, e.g. "
                          "['{instruction}\\n\\n{input}\\n', '{instruction}\\n'], or null to use task.prompt_column.")
    return [_parse(index, text) for index, text in enumerate(cfg.prompt_templates)]


def render_prompt(templates: list[PromptTemplate], record: Mapping[str, Any], where: str) -> str:
    """The first template that fits the row (every column it uses holds text there)."""
    for template in templates:
        if (prompt := template.render(record, where)) is not None:
            return prompt
    columns = dict.fromkeys(column for template in templates for column in template.columns)
    cells = ", ".join(f"{column}={record[column]!r}" for column in columns)
    raise ConfigError(
        f"No {SETTING} entry fits {where}: each uses a column that is empty there ({cells}); make the last "
        "template use only columns every row fills, or fix the data."
    )


def cell_text(value: Any, column: str, where: str) -> str | None:
    """A cell as prompt text: strings as written (spaces matter to a tokenizer), numbers in
    their usual form; None for an empty cell."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return None
    raise ConfigError(
        f"The {column!r} value on {where} is {_short(value)}; a {SETTING} field must name a column of text "
        "or numbers (lists and objects have no one way to be written into a prompt)."
    )


def _parse(index: int, text: str) -> PromptTemplate:
    name = f"{SETTING}[{index}]={text!r}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ConfigError(f"{name} is not a valid format string ({err}); write literal braces as '{{{{' and '}}}}'.") from None
    parts = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not PLAIN_FIELD.fullmatch(field) or spec or conversion):
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(
                f"{name} uses the field {shown}; a field must be a plain column name such as {{instruction}} "
                "(letters, digits, '_', '-' or spaces; no attribute, index, conversion or format spec); write "
                "literal braces as '{{{{' and '}}}}'."
            )
        parts.append((literal, field))
    template = PromptTemplate(text, tuple(parts))
    if not template.columns:
        raise ConfigError(f"{name} uses no column; a template builds the prompt from columns, e.g. '{{instruction}}\\n'.")
    return template


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
