"""Summary frames -> display tables (cells of text with bold/† marks) and their Markdown
and LaTeX forms; report.html draws the same tables from its Jinja2 template.

The summary's columns come from aggregate.py and grow over time, so tables are built from
a column -> header map: known columns get a header and a format (some are combined, e.g.
mean with its interval), columns the map does not know are shown under their own name.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lora_ablate.report.aggregate import GROUP, target_order
from lora_ablate.report.escape import md_escape, tex_escape

MARK = "†"
WILCOXON_MIN_PAIRS = 6  # below this the two-sided signed-rank test cannot reach p < 0.05


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False  # best mean of its group
    mark: bool = False  # significantly different from the baseline


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


def _first(row: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` the row has with a value."""
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and np.isnan(value)) \
                and value is not pd.NA:
            return value
    return None


def interval_columns(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The interval of the difference to the baseline: the hierarchical bootstrap one when
    aggregate computed it, else the t-interval over seeds."""
    for low, high in (("boot_ci_low", "boot_ci_high"), ("diff_ci_low", "diff_ci_high")):
        if low in frame and high in frame and frame[[low, high]].notna().any().any():
            return low, high
    return None


# ---------------------------------------------------------------- the summary column map


@dataclass(frozen=True)
class Column:
    """A displayed column built from summary columns (`uses`); shown when the frame has
    one of the first `aliases` of them (other names aggregate.py may give the same value)."""

    header: str
    uses: tuple[str, ...]
    cell: Callable[[Mapping[str, Any]], Cell]
    text: bool = False
    aliases: int = 1

    def shown(self, frame: pd.DataFrame) -> bool:
        return any(name in frame for name in self.uses[:self.aliases])


def _mean_cell(row: Mapping[str, Any]) -> Cell:
    mean, half = row.get("mean"), row.get("ci_half")
    low, high = row.get("ci_low"), row.get("ci_high")
    if pd.isna(half) and not (pd.isna(low) or pd.isna(high)):
        half = (high - low) / 2
    text = num(mean) if pd.isna(half) else f"{mean:.3f} ± {half:.3f}"
    if row.get("n") == 1:
        text += " (n=1)"
    return Cell(text, flag(row.get("rank") == 1), flag(row.get("significant")))


def _diff_cell(row: Mapping[str, Any]) -> Cell:
    diff = row.get("diff")
    if row.get("target_set") == row.get("baseline"):
        return Cell("baseline")
    low = _first(row, "boot_ci_low", "diff_ci_low")
    high = _first(row, "boot_ci_high", "diff_ci_high")
    if pd.isna(diff):
        return Cell("–")
    if low is None or high is None:
        return Cell(f"{diff:+.3f}")
    return Cell(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]")


def _text(name: str) -> Callable[[Mapping[str, Any]], Cell]:
    return lambda row: Cell(plain(row.get(name)) if row.get(name) not in ("", None) else "–")


def _fmt(name: str, fmt: str) -> Callable[[Mapping[str, Any]], Cell]:
    return lambda row: Cell(num(row.get(name), fmt))


def _p(name: str) -> Callable[[Mapping[str, Any]], Cell]:
    return lambda row: Cell(pvalue(row.get(name)))


def _yes_no(name: str) -> Callable[[Mapping[str, Any]], Cell]:
    return lambda row: Cell("–" if pd.isna(row.get(name)) else
                            "yes" if row.get(name) else "no")


SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("target set", ("target_set",), _text("target_set"), text=True),
    Column("runs", ("seeds_status", "status_note"),
           lambda r: Cell(plain(_first(r, "seeds_status", "status_note") or "–")),
           text=True, aliases=2),
    Column("LoRA rank", ("lora_rank",), _text("lora_rank")),
    Column("# params", ("lora_params",), _fmt("lora_params", ",.0f")),
    Column("n", ("n",), _fmt("n", ".0f")),
    Column("n pairs", ("n_pairs",), _fmt("n_pairs", ".0f")),
    Column("mean ± CI", ("mean", "ci_half", "ci_low", "ci_high", "rank", "significant"),
           _mean_cell),
    Column("unpaired mean", ("mean_unpaired", "unpaired_mean"),
           lambda r: Cell(num(_first(r, "mean_unpaired", "unpaired_mean"))), aliases=2),
    Column("Δ vs baseline [CI]", ("diff", "diff_ci_low", "diff_ci_high", "boot_ci_low",
                                  "boot_ci_high"), _diff_cell),
    Column("Δ interval covers", ("diff_ci_covers",), _text("diff_ci_covers"), text=True),
    Column("p (t, Holm)", ("p_ttest_holm", "p_holm"),
           lambda r: Cell(pvalue(_first(r, "p_ttest_holm", "p_holm"))), aliases=2),
    Column("p (sign-flip, Holm)", ("p_signflip_holm",), _p("p_signflip_holm")),
    Column("p (Wilcoxon, Holm)", ("p_wilcoxon_holm",), _p("p_wilcoxon_holm")),
    Column("testable", ("testable",), _yes_no("testable")),
    Column("resolved", ("resolved",), _yes_no("resolved")),
    Column("seeds McNemar p<0.05", ("mcnemar_seeds_below_alpha",),
           _text("mcnemar_seeds_below_alpha")),
    Column("MDE", ("mde",), _fmt("mde", ".3f")),
    Column("seeds for 0.01", ("seeds_needed", "seeds_for_1pt"),
           lambda r: Cell(num(_first(r, "seeds_needed", "seeds_for_1pt"), ".0f")), aliases=2),
    Column("rank", ("rank",), _fmt("rank", ".0f")),
    Column("note", ("test_note", "baseline_note"),
           lambda r: Cell("; ".join(str(v) for v in (r.get("test_note"), r.get("baseline_note"))
                                    if isinstance(v, str) and v) or "–"),
           text=True, aliases=2),
)
# Summary columns that are in the title, folded into a displayed column or a caption, or
# kept for summary.csv only (per-seed lists, raw p-values, spreads, costs).
NOT_SHOWN = frozenset({
    *GROUP, "layers", "metric", "baseline", "std", "diff_std", "diff_t_low", "diff_t_high",
    "diff_ci_method", "ci_covers", "p_ttest", "p_signflip", "p_wilcoxon", "p_mcnemar_by_seed",
    "wilcoxon_note", "problem_seeds", "seeds_needed_observed", "train_seconds",
    "tokens_per_second", "peak_memory_bytes", "_order",
})


def summary_columns(frame: pd.DataFrame) -> list[Column]:
    """Displayed columns for `frame`: the known ones it has, then its unknown ones by name.
    The Wilcoxon column only where some cell has enough pairs for it to reach 0.05."""
    known = [c for c in SUMMARY_COLUMNS if c.shown(frame)]
    pairs = frame["n_pairs"] if "n_pairs" in frame else pd.Series(dtype=float)
    if not (pd.to_numeric(pairs, errors="coerce") >= WILCOXON_MIN_PAIRS).any():
        known = [c for c in known if c.uses != ("p_wilcoxon_holm",)]
    used = {u for c in SUMMARY_COLUMNS for u in c.uses} | NOT_SHOWN
    unknown = [Column(str(name), (name,), _text(name)) for name in frame.columns
               if name not in used]
    return known + unknown


def _group_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in (*GROUP, "layers") if k in frame and k != "target_set"]


def group_title(key: Mapping[str, Any]) -> str:
    parts = [str(key.get("model", "")), str(key.get("task", ""))]
    if "budget" in key:
        scale = key.get("budget_scale")
        scale = f" ×{scale:g}" if isinstance(scale, (int, float)) and not pd.isna(scale) else ""
        parts.append(f"budget {key['budget']}{scale}")
    if key.get("layers") not in (None, "", "all") and not pd.isna(key.get("layers")):
        parts.append(f"layers {key['layers']}")
    if isinstance(key.get("variant"), str) and key["variant"]:
        parts.append(key["variant"])
    return " · ".join(p for p in parts if p)


def legend(baseline: str, confidence: float) -> str:
    return (f"Mean ± half-width of the {confidence:.0%} t-interval over seeds. Bold: best mean "
            f"of its group. {MARK}: differs from the baseline {baseline} (Holm-adjusted "
            f"p < 0.05 over the group's target sets). Δ: mean paired difference to {baseline} "
            f"with its interval.")


def interval_caption(frame: pd.DataFrame, confidence: float) -> str:
    """What the intervals of a summary table cover, said under the table."""
    def seen(column: str) -> list[str]:
        return sorted(set(frame[column].dropna().astype(str))) if column in frame else []

    mean_covers = ", ".join(seen("ci_covers")) or "seeds"
    diff_covers = seen("diff_ci_covers")
    bounds = interval_columns(frame)
    if diff_covers:
        methods = seen("diff_ci_method")
        diff_text = (f"covers {' / '.join(diff_covers)} as the 'Δ interval covers' column says"
                     + (f" ({', '.join(methods)})" if methods else ""))
    elif bounds and bounds[0].startswith("boot"):
        diff_text = "hierarchical bootstrap over seeds and test examples, widened for few seeds"
    else:
        diff_text = "t-interval over shared seeds"
    return (f"Intervals are {confidence:.0%}. mean ± CI: Student t over {mean_covers} (test "
            f"examples held fixed). Δ [CI]: {diff_text}. n: seeds completed; n pairs: seeds "
            f"shared with the baseline. Each interval is per comparison, not adjusted for the "
            f"others; the Holm-adjusted p is.")


def tuned_columns(tune: Sequence[str]) -> list[Column]:
    """The tuned table's own columns, shown after the target set: the chosen value of each
    tuned key, the validation mean it was chosen by, and whether it is at the grid's edge."""
    return [*(Column(key, (key,), _text(key)) for key in tune),
            Column("val mean", ("val_mean",), _fmt("val_mean", ".3f")),
            Column("edge of grid", ("edge_of_grid",), _yes_no("edge_of_grid"))]


def tuned_tables(tuned: pd.DataFrame, tune: Sequence[str],
                 confidence: float = 0.95) -> list[Table]:
    """tuned.csv as tables: per group (without the tuned keys), each target set at its own
    chosen value, with the summary's columns for its test result."""
    return summary_tables(tuned, confidence, extra=tuned_columns(tune),
                          hide=("grid", "val_metric"))


def summary_tables(summary: pd.DataFrame, confidence: float = 0.95,
                   extra: Sequence[Column] = (), hide: Sequence[str] = ()) -> list[Table]:
    """One table per group (model, task, budget, budget_scale, layers, variant): a row per
    target set, with the columns `summary_columns` picks (`extra` ones after the target
    set; `hide` columns left out)."""
    keys = _group_keys(summary)
    if summary.empty:
        return []
    shown = summary.drop(columns=[c for c in (*hide, *(u for c in extra for u in c.uses))
                                  if c in summary])
    tables = []
    for key, rows in summary.groupby(keys, sort=False, dropna=False):
        named = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        found = summary_columns(shown.loc[rows.index].dropna(axis=1, how="all").assign(
            target_set=rows["target_set"]))
        columns = [found[0], *(c for c in extra if c.shown(rows)), *found[1:]]
        body = tuple(tuple(c.cell(row) for c in columns)
                     for row in rows.to_dict("records"))
        metric = rows["metric"].iloc[0] if "metric" in rows else ""
        leading = next((i for i, c in enumerate(columns) if not c.text), len(columns))
        tables.append(Table(f"{group_title(named)} — {metric}", tuple(c.header for c in columns),
                            body, text_columns=max(1, leading),
                            caption=interval_caption(rows, confidence)))
    return tables


# ---------------------------------------------------------------- the LoRA paper's Table 5


def _ordered_sets(frame: pd.DataFrame) -> list[str]:
    names = frame.drop_duplicates("target_set")
    ordered = names.assign(_o=target_order(names["target_set"])).sort_values("_o")
    return list(ordered["target_set"])


TABLE5_KEYS = tuple(k for k in GROUP if k != "task")  # one Table 5 per these; tasks are its columns


def _table5_keys(summary: pd.DataFrame) -> list[str]:
    return [k for k in TABLE5_KEYS if k in summary]


def table5_tables(summary: pd.DataFrame, confidence: float = 0.95) -> list[Table]:
    """Rows = target sets (with LoRA rank and # params), columns = tasks, cells mean ± CI:
    the layout of the LoRA paper's Table 5, one per (model, budget, scale, layers, variant)."""
    if summary.empty:
        return []
    keys = _table5_keys(summary)
    tables = []
    for key, group in summary.groupby(keys, sort=True, dropna=False):
        named = dict(zip(keys, key))
        tasks = group.drop_duplicates("task")[["task", "metric"]].to_numpy()
        cells = {(r["target_set"], r["task"]): r for r in group.to_dict("records")}
        rows = []
        for name in _ordered_sets(group):
            first = next(r for (t, _), r in cells.items() if t == name)
            row = [Cell(name), Cell(plain(first.get("lora_rank") or "–")),
                   Cell(num(first.get("lora_params"), ",.0f"))]
            for task, _ in tasks:
                row.append(_mean_cell(cells[(name, task)]) if (name, task) in cells
                           else Cell("–"))
            rows.append(tuple(row))
        heads = tuple(f"{task} ({str(metric).split('/', 1)[-1]})" for task, metric in tasks)
        tables.append(Table(group_title(named), ("target set", "LoRA rank", "# params", *heads),
                            tuple(rows), caption=f"Mean ± half-width of the {confidence:.0%} "
                            f"t-interval over seeds (test examples held fixed)."))
    return tables


def table5_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 5 as numbers: a row per (model, budget, scale, layers, variant, target_set)
    with <task>/mean and <task>/ci_half columns."""
    index = [*_table5_keys(summary), "target_set"] if not summary.empty else [*TABLE5_KEYS, "target_set"]
    if summary.empty:
        return pd.DataFrame(columns=[*index, "lora_rank", "lora_params"])
    wide = summary.pivot_table(index=index, columns="task", values=["mean", "ci_half"],
                               aggfunc="first", dropna=False)
    tasks = list(dict.fromkeys(summary["task"]))
    wide = wide[[(stat, task) for task in tasks for stat in ("mean", "ci_half")]]
    wide.columns = [f"{task}/{stat}" for stat, task in wide.columns]
    info = summary.groupby(index, dropna=False)[["lora_rank", "lora_params"]].first()
    table = info.join(wide).reset_index()
    table = table.assign(_o=target_order(table["target_set"])).sort_values(
        [*index[:-1], "_o"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


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


def tables_md(tables: Sequence[Table]) -> str:
    return "\n".join(map(md_table, tables))
