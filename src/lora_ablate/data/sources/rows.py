"""Records (a user's file, a hub split) -> texts and label ids, checking every column and
label and naming the row of the first bad one."""

import re
from collections.abc import Sequence
from typing import Any

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.splits import Example
from lora_ablate.errors import ConfigError

Row = tuple[str, dict[str, Any]]  # (where it came from, e.g. "line 7 of /data/x.csv"; the record)


def columns(rows: Sequence[Row], cfg: TaskConfig) -> tuple[list[str], list[str | None], list[tuple[str, Any]]]:
    """Text, pair and (where, raw label) of every row, checking that the columns exist."""
    settings = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        settings["task.text_pair_column"] = cfg.text_pair_column
    texts, pairs, labels = [], [], []
    for where, record in rows:
        for setting, column in settings.items():
            if column not in record:
                raise ConfigError(
                    f"{setting}={column!r} is not a column of the data ({where} has: "
                    f"{', '.join(map(str, record)) or 'nothing'}); set {setting} to one of those."
                )
        texts.append(_text_cell(record[cfg.text_column], where, cfg.text_column))
        pairs.append(_text_cell(record[cfg.text_pair_column], where, cfg.text_pair_column) if cfg.text_pair_column else None)
        labels.append((where, record[cfg.label_column]))
    return texts, pairs, labels


def labelled_examples(rows: Sequence[Row], cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    """Label names and examples of records whose labels are names or ids (encode_labels)."""
    texts, pairs, labels = columns(rows, cfg)
    names, ids = encode_labels(labels, cfg.label_names, cfg.num_labels)
    return names, [Example(t, i, p) for t, p, i in zip(texts, pairs, ids)]


def _text_cell(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"The {column!r} value on {where} is {value!r}; every example needs a non-empty text.")
    return value.strip()


def encode_labels(
    raw: Sequence[tuple[str, Any]], label_names: Sequence[str] | None, num_labels: int
) -> tuple[list[str], list[int]]:
    """Label names and ids for (where, label) pairs whose labels are strings or integers.

    With label_names, a label is looked up by name, or, when every label is an integer
    id in range, used as the id. Without, integer labels are ids 0 .. num_labels-1 (named
    by their number; one out of range is refused), and other labels are named by the
    distinct values sorted.
    """
    values = [(where, _label_value(value, where)) for where, value in raw]
    if label_names is None and values and all(isinstance(v, int) for _, v in values):
        if bad := next(((w, v) for w, v in values if not 0 <= v < num_labels), None):
            raise ConfigError(
                f"The label {bad[1]} on {bad[0]} is not a label id for task.num_labels={num_labels} "
                f"(ids are 0 to {num_labels - 1}); fix the label, raise task.num_labels, or set "
                "task.label_names to the labels as names (e.g. ['1', '2', '3', '4', '5'] for star ratings)."
            )
        return [str(i) for i in range(num_labels)], [v for _, v in values]
    if label_names is not None:
        names = list(label_names)
        index = {name: i for i, name in enumerate(names)}
        if all(str(v) in index for _, v in values):
            return names, [index[str(v)] for _, v in values]
        if all(isinstance(v, int) and 0 <= v < len(names) for _, v in values):
            return names, [v for _, v in values]
        where, bad = next((w, v) for w, v in values if str(v) not in index)
        raise ConfigError(
            f"The label {bad!r} on {where} is not one of task.label_names {names}; add it there, "
            "fix the file, or remove task.label_names to use the labels found in the file."
        )
    distinct = sorted({v for _, v in values}, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, str(v)))
    index = {v: i for i, v in enumerate(distinct)}
    return [str(v) for v in distinct], [index[v] for _, v in values]


def _label_value(value: Any, where: str) -> int | str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if re.fullmatch(r"-?\d+", text) else text
    raise ConfigError(f"The label on {where} is {value!r}; labels must be non-empty strings or integers.")
