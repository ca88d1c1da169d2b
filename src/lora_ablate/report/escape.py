"""Making data safe to put into Markdown, LaTeX and CSV.

Everything a report shows from a record (task names, errors, config values) is data, not
markup: a task called `<script>` must print as text in report.md, and an error message
starting with `=HYPERLINK(` must not become a formula when runs.csv is opened in a
spreadsheet. HTML is escaped by Jinja2's autoescaping (render.py).
"""

import re
from types import MappingProxyType
from typing import Any

import pandas as pd

# Characters with a meaning in CommonMark/GFM inline text (emphasis, code, links, images,
# tables, strikethrough, math, headings), backslash-escaped; <, > and & become entities so
# no HTML survives. A leading "- ", "+ " or "1. " would start a list, a line of only = or -
# a heading: their first character is escaped too.
_MD_PUNCT = re.compile(r"([\\`*_\[\]#!|~$])")
_MD_BLOCK_START = re.compile(r"^(?:\d{1,9}[.)]|[-+])(?=\s|$)|^(?:=+|-+)$")
_MD_ENTITIES = MappingProxyType({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# Cells a spreadsheet reads as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TEX_ESCAPES = MappingProxyType({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--", "Δ": r"$\Delta$", "×": r"$\times$", "·": r"$\cdot$",
    "<": r"$<$", ">": r"$>$", "—": "---", "†": r"$^\dagger$",
})


class Markdown(str):
    """Text that is already Markdown (written by this package, never taken from data)."""


def md_escape(value: Any) -> Markdown:
    """`value` as literal Markdown text on one line: markup characters escaped, HTML
    turned into entities, newlines folded (a table cell or list item is one line)."""
    if isinstance(value, Markdown):
        return value
    text = " ".join(str(value).split())
    if _is_number(text):  # plain numbers ("0.812", "-0.01") stay readable
        return Markdown(text)
    text = "".join(_MD_ENTITIES.get(ch, ch) for ch in _MD_PUNCT.sub(r"\\\1", text))
    if _MD_BLOCK_START.match(text):  # "1. x" -> "1\. x", "- x" -> "\- x"
        digits = len(text) - len(text.lstrip("0123456789"))
        text = text[:digits] + "\\" + text[digits:]
    return Markdown(text)


def md_finalize(value: Any) -> str:
    """Jinja2 `finalize` for the Markdown template: every `{{ }}` is escaped unless it is
    `Markdown` written by the package, so no data reaches report.md as markup."""
    return "" if value is None else md_escape(value)


def tex_escape(text: Any) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text != ""


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe;
    numbers (also negative ones) and everything else are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` safe to open in a spreadsheet: text cells and column names that
    start with = + - @ tab or CR are prefixed with ', except genuine numbers."""
    out = frame.copy()
    out.columns = [csv_cell(str(c)) for c in out.columns]
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if column.dtype != object and not pd.api.types.is_string_dtype(column):
            continue  # numeric, boolean, datetime: nothing a spreadsheet could run
        risky = column.map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START))
        if risky.any():
            out.iloc[:, i] = column.where(~risky, column.map(csv_cell))
    return out


def to_csv(frame: pd.DataFrame) -> str:
    return csv_safe(frame).to_csv(index=False)
