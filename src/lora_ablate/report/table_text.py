"""Tables as text: any frame as a table, and a table as Markdown or LaTeX (report.html
draws the same tables from its Jinja2 template)."""

from collections.abc import Mapping

import pandas as pd

from lora_ablate.report.cells import MARK, Cell, Table, plain
from lora_ablate.report.escape import md_escape, tex_escape


# ---------------------------------------------------------------- any frame as a table


def frame_table(title: str, frame: pd.DataFrame, headers: Mapping[str, str] | None = None,
                caption: str = "") -> Table:
    """A frame shown as it is (lists of runs, missing cells, tuned results): a header per
    column from `headers`, its own name otherwise."""
    headers = headers or {}
    rows = tuple(tuple(Cell(plain(v) if not (isinstance(v, str) and v == "") else "")
                       for v in r) for r in frame.itertuples(index=False))
    return Table(title, tuple(headers.get(str(c), str(c)) for c in frame.columns), rows,
                 text_columns=len(frame.columns), caption=caption)


# ---------------------------------------------------------------- Markdown and LaTeX


def md_table(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = md_escape(c.text)
        return (f"**{text}**" if c.bold else text) + (f" {MARK}" if c.mark else "")

    align = [":---" if i < table.text_columns else "---:" for i in range(len(table.columns))]
    lines = [f"**{md_escape(table.title)}**", "",
             "| " + " | ".join(md_escape(c) for c in table.columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{md_escape(table.caption)}*"]
    return "\n".join(lines) + "\n"


def tex_table(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = tex_escape(" ".join(c.text.split()))
        return (rf"\textbf{{{text}}}" if c.bold else text) + (r"$^\dagger$" if c.mark else "")

    spec = "".join("l" if i < table.text_columns else "r" for i in range(len(table.columns)))
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{tex_escape(table.title)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.caption:
        lines.append(rf"\par\smallskip{{\footnotesize {tex_escape(table.caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
