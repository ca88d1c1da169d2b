"""The display primitives of the report's tables: a cell of text with its bold/† marks, a
table with its caption, and how numbers, p-values and missing values are written."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MARK = "†"


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False  # highest mean of its group over the seeds all its target sets share
    mark: bool = False  # resolved against the baseline (family procedure)


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    text_columns: int = 1  # leading columns aligned left; the rest are numbers, aligned right
    caption: str = ""  # under the table: what its intervals cover


# ---------------------------------------------------------------- formatting


def num(x: Any, fmt: str = ".3f") -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)):
        return "–"
    try:
        return format(x, fmt)
    except (TypeError, ValueError):
        return str(x)


def pvalue(x: Any) -> str:
    return "–" if pd.isna(x) else "<0.001" if x < 0.001 else f"{x:.3f}"


def flag(value: Any) -> bool:
    return False if value is None or pd.isna(value) else bool(value)


def plain(value: Any) -> str:
    """Any other value: floats to 4 significant digits, missing as –."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if np.isnan(value) else format(float(value), ".4g")
    return str(value)


def first_present(row: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` the row has with a value."""
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and np.isnan(value)) \
                and value is not pd.NA:
            return value
    return None
