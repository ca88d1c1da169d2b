"""Summary frames -> display tables (cells of text with bold/† marks): the summary and
tuned tables per group and the LoRA paper's Table 5. Their Markdown and LaTeX forms are in
table_text.py (re-exported here), the display primitives in cells.py.

The summary's columns come from summary.py and grow over time, so tables are built from
a column -> header map: known columns get a header and a format (some are combined, e.g.
mean with its interval), columns the map does not know are shown under their own name.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lora_ablate.labels import GROUP
from lora_ablate.report.ordering import target_order
from lora_ablate.report.cells import MARK, Cell, Table, first_present, flag, num, plain, pvalue
from lora_ablate.report.group_labels import group_title
from lora_ablate.report.metrics import axis_label
from lora_ablate.report.table_text import frame_table, md_table, tex_table

__all__ = ["COMPACT", "MARK", "TIED", "Cell", "Table", "compact_table", "flag", "frame_table",
           "group_title", "legend", "md_table", "num", "plain", "pvalue", "summary_tables",
           "table5_frame", "table5_tables", "tex_table", "tuned_tables"]

RANK_TESTS = ("p_signflip_holm", "p_wilcoxon_holm")
TIED = "(tied top)"  # beside each mean that shares the group's highest one
# report.html's main table: these columns of the summary table; the rest behind a fold.
COMPACT = ("target set", "LoRA rank", "mean ± CI", "Δ vs baseline [interval]", "p (t, Holm)",
           "resolved")


def interval_columns(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The interval of the difference to the baseline printed beside "resolved": the
    family procedure's, at the level of its Holm step."""
    if {"diff_ci_low", "diff_ci_high"} <= set(frame.columns) \
            and frame[["diff_ci_low", "diff_ci_high"]].notna().any().any():
        return "diff_ci_low", "diff_ci_high"
    return None


# ---------------------------------------------------------------- the summary column map


@dataclass(frozen=True)
class Column:
    """A displayed column built from summary columns (`uses`); shown when the frame has
    one of the first `aliases` of them (e.g. a value or the note that stands in for it)."""

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
    top, tied = row.get("rank") == 1, flag(row.get("rank_tied"))
    if top and tied:  # several sets share the highest mean: none is bold, each says so
        text += f" {TIED}"
    return Cell(text, top and not tied, flag(row.get("significant")))


def _diff_cell(row: Mapping[str, Any]) -> Cell:
    diff = row.get("diff")
    if row.get("target_set") == row.get("baseline"):
        return Cell("baseline")
    low, high = first_present(row, "diff_ci_low"), first_present(row, "diff_ci_high")
    if pd.isna(diff):
        return Cell("–")
    if low is None or high is None:
        return Cell(f"{diff:+.3f} (no interval)")
    return Cell(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]")


def _level_cell(row: Mapping[str, Any]) -> Cell:
    level, low = row.get("diff_ci_level"), row.get("diff_ci_low")
    if level is None or pd.isna(level) or low is None or pd.isna(low):
        return Cell("–")
    return Cell(f"{100 * level:.2f}%")


def _mcnemar_cell(row: Mapping[str, Any]) -> Cell:
    better, worse = row.get("mcnemar_seeds_better"), row.get("mcnemar_seeds_worse")
    if better is None or pd.isna(better):
        return Cell("–")
    return Cell(f"{int(better)} / {int(worse)}")


def _seeds_cell(seeds: str, note: str) -> Callable[[Mapping[str, Any]], Cell]:
    def cell(row: Mapping[str, Any]) -> Cell:
        value = row.get(seeds)
        if value is not None and not pd.isna(value):
            return Cell(f"{int(value)}")
        text = row.get(note)
        return Cell(text if isinstance(text, str) and text else "–")
    return cell


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
    Column("runs", ("seeds_status",), lambda r: Cell(plain(first_present(r, "seeds_status") or "–")),
           text=True),
    Column("still improving (seeds)", ("improving_seeds",), _text("improving_seeds"), text=True),
    Column("LoRA rank", ("lora_rank",), _text("lora_rank")),
    Column("# params", ("lora_params",), _fmt("lora_params", ",.0f")),
    Column("n", ("n",), _fmt("n", ".0f")),
    Column("n pairs", ("n_pairs",), _fmt("n_pairs", ".0f")),
    Column("mean ± CI", ("mean", "ci_half", "ci_low", "ci_high", "rank", "significant"),
           _mean_cell),
    Column("unpaired mean", ("mean_unpaired",), _fmt("mean_unpaired", ".3f")),
    Column("Δ vs baseline [interval]", ("diff", "diff_ci_low", "diff_ci_high", "resolved"),
           _diff_cell),
    Column("interval level", ("diff_ci_level",), _level_cell),
    Column("Δ interval covers", ("diff_ci_covers",), _text("diff_ci_covers"), text=True),
    Column("p (t, Holm)", ("p_ttest_holm",), _p("p_ttest_holm")),
    Column("p (sign-flip, Holm)", ("p_signflip_holm",), _p("p_signflip_holm")),
    Column("p (Wilcoxon, Holm)", ("p_wilcoxon_holm",), _p("p_wilcoxon_holm")),
    Column("testable", ("testable",), _yes_no("testable")),
    Column("resolved", ("resolved",), _yes_no("resolved")),
    # Which stage of an adaptive sweep's design concluded the row (shown for such sweeps only).
    Column("stage", ("stage",), _fmt("stage", ".0f")),
    Column("seeds McNemar p<0.05 better / worse", ("mcnemar_seeds_better", "mcnemar_seeds_worse"),
           _mcnemar_cell),
    Column("MDE (family level)", ("mde",), _fmt("mde", ".3f")),
    Column("seeds for observed Δ", ("seeds_needed_observed", "seeds_needed_observed_note"),
           _seeds_cell("seeds_needed_observed", "seeds_needed_observed_note"), aliases=2),
    Column("seeds for report.effect", ("seeds_needed", "seeds_needed_note"),
           _seeds_cell("seeds_needed", "seeds_needed_note"), aliases=2),
    Column("rank", ("rank",), _fmt("rank", ".0f")),
    Column("note", ("test_note", "baseline_note"),
           lambda r: Cell("; ".join(str(v) for v in (r.get("test_note"), r.get("baseline_note"))
                                    if isinstance(v, str) and v) or "–"),
           text=True, aliases=2),
)
# Summary columns that are in the title, folded into a displayed column or a caption, or
# kept for summary.csv only (per-seed lists, raw p-values, spreads, costs).
NOT_SHOWN = frozenset({
    *GROUP, "layers", "metric", "baseline", "std", "diff_std", "diff_se", "diff_ci_method",
    "diff_ci_low_per_comparison", "diff_ci_high_per_comparison", "holm_step", "ci_covers",
    "p_ttest", "p_signflip", "p_wilcoxon", "p_mcnemar_by_seed", "wilcoxon_note",
    "rank_tests_can_reach_alpha", "n_common", "mean_common", "rank_tied", "significant",
    "problem_seeds", "train_seconds", "tokens_per_second", "peak_memory_bytes", "_order",
})


def rank_tests_shown(frame: pd.DataFrame) -> bool:
    """Whether the sign-flip and Wilcoxon columns could show a Holm p below alpha for some
    row (the summary's rank_tests_can_reach_alpha; without it, from n pairs ≥ 6)."""
    if "rank_tests_can_reach_alpha" in frame:
        return bool(frame["rank_tests_can_reach_alpha"].fillna(False).astype(bool).any())
    pairs = pd.to_numeric(frame.get("n_pairs", pd.Series(dtype=float)), errors="coerce")
    return bool((pairs >= 6).any())


def summary_columns(frame: pd.DataFrame) -> list[Column]:
    """Displayed columns for `frame`: the known ones it has, then its unknown ones by name.
    The sign-flip and Wilcoxon columns only where they could reach alpha under Holm."""
    known = [c for c in SUMMARY_COLUMNS if c.shown(frame)]
    if not rank_tests_shown(frame):
        known = [c for c in known if c.uses[0] not in RANK_TESTS]
    if "stage" in frame and frame["stage"].isna().all():  # not an adaptive sweep
        known = [c for c in known if c.uses[0] != "stage"]
    used = {u for c in SUMMARY_COLUMNS for u in c.uses} | NOT_SHOWN
    unknown = [Column(str(name), (name,), _text(name)) for name in frame.columns
               if name not in used]
    return known + unknown


def _group_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in (*GROUP, "layers") if k in frame and k != "target_set"]


def legend(baseline: str, confidence: float) -> str:
    return (f"Mean ± half-width of the {confidence:.0%} t-interval over seeds. Bold: best "
            f"mean of its group (highest; lowest for a loss) over the seeds all its target sets share (a ranking, not a "
            f"test); where sets share that mean, none is bold and each says {TIED}. "
            f"{MARK}: resolved against the baseline {baseline} by the family procedure "
            f"(Holm over the group's target sets). Δ: mean paired difference to {baseline} "
            f"with its interval at the level of its Holm step, which excludes 0 exactly when "
            f"the row is resolved.")


def interval_caption(frame: pd.DataFrame, confidence: float) -> str:
    """What the intervals of a summary table cover, said under the table."""
    def seen(column: str) -> list[str]:
        return sorted(set(frame[column].dropna().astype(str))) if column in frame else []

    mean_covers = ", ".join(seen("ci_covers")) or "seeds"
    diff_covers = seen("diff_ci_covers")
    covers = (f"it covers {' / '.join(diff_covers)} as the 'Δ interval covers' column says"
              if diff_covers else "it covers the shared seeds")
    text = (f"mean ± CI: {confidence:.0%} Student t over {mean_covers} (test examples held "
            f"fixed). Δ [interval]: t with n pairs − 1 df, at the level of its Holm step "
            f"(interval level column; every one at least 1 − alpha), so it excludes 0 exactly "
            f"when the row is resolved ({MARK}); {covers} (the SE adds the set × example term "
            f"where per-example values exist). summary.csv also has each comparison's "
            f"unadjusted interval (diff_ci_*_per_comparison). n: seeds completed; n pairs: "
            f"seeds shared with the baseline. MDE and seeds needed are at the family level "
            f"(alpha / number of comparisons, 80 % power).")
    if not rank_tests_shown(frame) and "p_signflip_holm" in frame:
        text += (" Sign-flip and Wilcoxon p are not shown: with this few pairs their smallest "
                 "Holm-adjusted p (comparisons × 2 / 2^pairs) cannot fall below alpha.")
    return text


def tuned_columns(tune: Sequence[str]) -> list[Column]:
    """The tuned table's own columns, shown after the target set: the chosen value of each
    tuned key, the validation score it was chosen by (lost seeds counting as the worst), the
    seeds behind it and how many were lost, whether it is at the grid's edge, and ties."""
    return [*(Column(key, (key,), _text(key)) for key in tune),
            Column("val mean", ("val_mean",), _fmt("val_mean", ".3f")),
            Column("val seeds (lost)", ("val_seeds", "n_lost"), _val_seeds_cell),
            Column("edge of grid", ("edge_of_grid",), _yes_no("edge_of_grid")),
            Column("tuning note", ("tie_note",), _text("tie_note"), text=True)]


def _val_seeds_cell(row: Mapping[str, Any]) -> Cell:
    seeds, lost = row.get("val_seeds"), row.get("n_lost")
    if seeds is None or pd.isna(seeds):
        return Cell("–")
    return Cell(f"{int(seeds)} ({0 if lost is None or pd.isna(lost) else int(lost)})")


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
        title = f"{group_title(named)} — {axis_label(metric, '')}"
        tables.append(Table(title, tuple(c.header for c in columns), body,
                            text_columns=max(1, leading),
                            caption=interval_caption(rows, confidence)))
    return tables


def compact_table(table: Table) -> Table:
    """The summary table with the COMPACT columns it has (report.html's main table)."""
    keep = [i for i, head in enumerate(table.columns) if head in COMPACT]
    text = sum(1 for i in keep if i < table.text_columns)
    return Table(table.title, tuple(table.columns[i] for i in keep),
                 tuple(tuple(row[i] for i in keep) for row in table.rows),
                 text_columns=max(1, text), caption=table.caption)


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
