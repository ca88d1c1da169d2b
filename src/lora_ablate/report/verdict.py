"""The verdict: one plain paragraph per group that says what the sweep found, formatted
from the summary (and tuned) frames only, so every number in it is one of theirs.

Markdown-safe: no characters that Markdown or HTML would read as markup (no *, |, `,
brackets or tags; "<0.001" is not a tag).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lora_ablate.report.aggregate import GROUP, group_label
from lora_ablate.report.tuning import _split_variant


@dataclass(frozen=True)
class Verdict:
    group: tuple[Any, ...]  # the GROUP values of the summary rows it describes
    title: str
    text: str


def fmt_p(p: Any) -> str:
    return "n/a" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_diff(x: Any) -> str:
    return "n/a" if pd.isna(x) else f"{x:+.3f}"


def _safe(text: str) -> str:
    """Names as plain text: Markdown's emphasis and table characters become harmless
    look-alikes (underscores inside a word, as in qkv_ffn, are not emphasis)."""
    return str(text).replace("*", "\u2217").replace("|", "/").replace("`", "'")


def comparison(row: Any, confidence: float) -> str:
    """'all vs qv: +0.032 (95% interval +0.006 to +0.027, over seeds+test examples;
    Holm p 0.012)' from a summary or tuned row."""
    interval = ("no interval" if pd.isna(row.diff_ci_low) else
                f"{confidence:.0%} interval {fmt_diff(row.diff_ci_low)} to "
                f"{fmt_diff(row.diff_ci_high)}, over {row.diff_ci_covers}")
    return (f"{_safe(row.target_set)} vs {_safe(row.baseline)}: {fmt_diff(row.diff)} "
            f"({interval}; Holm p {fmt_p(row.p_ttest_holm)}; {row.n_pairs} paired seeds)")


def _unresolved(row: Any, confidence: float, effect: float) -> str:
    text = comparison(row, confidence)
    if not row.testable or pd.isna(row.seeds_needed):
        return f"{text}, {row.test_note or 'not testable'}"
    return (f"{text}, at the observed spread about {row.seeds_needed} paired seeds would "
            f"resolve a difference of {effect:g} (detectable now: {row.mde:.3f})")


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _tune_keys(tuned: pd.DataFrame) -> list[str]:
    columns = list(tuned.columns)
    return columns[columns.index("target_set") + 1: columns.index("grid")]


def _tuned_rows(tuned: pd.DataFrame | None, key: Sequence[Any]) -> pd.DataFrame | None:
    if tuned is None or tuned.empty:
        return None
    fields = dict(zip(GROUP, key))
    rest, _ = _split_variant(fields["variant"], _tune_keys(tuned))
    mask = pd.Series(True, index=tuned.index)
    for name in GROUP:
        mask &= tuned[name].astype(str).eq(str(rest if name == "variant" else fields[name]))
    return tuned[mask] if mask.any() else None


def _tuning_sentence(rows: pd.DataFrame, best: str, tune: list[str],
                     confidence: float) -> tuple[str, list[str]]:
    keys = ", ".join(tune)
    top = rows[rows["rank"].eq(1)]
    resolved = rows[rows["resolved"].fillna(False).astype(bool)]
    if len(top):
        first = top.iloc[0]
        tuned_best = str(first["target_set"])
        change = ("keeps the same best target set" if tuned_best == best else
                  f"changes the best target set to {_safe(tuned_best)}")
        values = ", ".join(f"{k} {_value(first[k])}" for k in tune)
        text = (f"Tuning {keys} per target set on the validation metric {change} "
                f"({_safe(tuned_best)} at {values}, test mean {first['mean']:.3f})")
    else:
        text = f"Tuning {keys} per target set left no comparable result"
    text += "; resolved after tuning: " + ("; ".join(
        comparison(r, confidence) for r in resolved.itertuples(index=False)) or "none") + "."
    edge = rows[rows["edge_of_grid"].fillna(False).astype(bool)]
    caveats = [f"{keys} chosen at the edge of its grid for "
               + ", ".join(_safe(n) for n in edge["target_set"])
               + ", so the best value may lie outside the grid"] if len(edge) else []
    return text, caveats


def group_verdict(key: Sequence[Any], rows: pd.DataFrame, *, tuned: pd.DataFrame | None,
                  confidence: float, effect: float, one_task: bool) -> Verdict:
    metric = rows["metric"].iloc[0]
    baseline = str(rows["baseline"].iloc[0])
    others = rows[rows["target_set"].ne(baseline)]
    top = rows[rows["rank"].eq(1)]
    best = str(top["target_set"].iloc[0]) if len(top) else baseline
    parts = []
    if len(top):
        b = top.iloc[0]
        parts.append(f"Best on {metric}: {_safe(best)}, mean {b['mean']:.3f} over {b['n_pairs']} "
                     f"seeds shared with the baseline {_safe(baseline)} ({confidence:.0%} interval "
                     f"{b['ci_low']:.3f} to {b['ci_high']:.3f} over {b['ci_covers']}).")
    resolved = others[others["resolved"].fillna(False).astype(bool)]
    open_ = others[~others["resolved"].fillna(False).astype(bool)]
    parts.append("Resolved against the baseline (Holm over the group's "
                 f"{len(others)} comparisons): "
                 + ("; ".join(comparison(r, confidence) for r in resolved.itertuples(index=False))
                    or "none") + ".")
    if len(open_):
        parts.append("Not resolved: " + "; ".join(
            _unresolved(r, confidence, effect) for r in open_.itertuples(index=False)) + ".")
    caveats = []
    tuned_rows = _tuned_rows(tuned, key)
    if tuned_rows is not None:
        text, more = _tuning_sentence(tuned_rows, best, _tune_keys(tuned), confidence)
        parts.append(text)
        caveats += more
    problems = rows[rows["problem_seeds"].fillna("").ne("")]
    caveats += [f"{_safe(r.target_set)} {r.seeds_status} ({r.problem_seeds})"
                for r in problems.itertuples(index=False)]
    caveats += list(dict.fromkeys(n for n in rows["baseline_note"].fillna("") if n))
    if one_task:
        caveats.append("one task only, so the answer may not carry over to other tasks")
    if caveats:
        parts.append("Caveats: " + "; ".join(caveats) + ".")
    title = group_label(key)
    return Verdict(tuple(key), title, f"{_safe(title)}. " + " ".join(parts))


def verdicts(summary: pd.DataFrame, tuned: pd.DataFrame | None = None, *,
             confidence: float = 0.95, effect: float = 0.01) -> list[Verdict]:
    """One verdict per group of the summary: the best target set, the differences to the
    baseline that are resolved (Holm-adjusted p < alpha and an interval that excludes 0,
    with what the interval covers), those that are not and the seeds that would resolve
    them, whether tuning changes the answer, and caveats."""
    if summary.empty:
        return []
    one_task = summary["task"].nunique() == 1
    return [group_verdict(key, rows, tuned=tuned, confidence=confidence, effect=effect,
                          one_task=one_task)
            for key, rows in summary.groupby(list(GROUP), sort=False, dropna=False)]
