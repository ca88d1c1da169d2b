"""The verdict: one plain paragraph per group that says what the sweep found, formatted
from the summary (and tuned) frames only, so every number in it is one of theirs.

Markdown-safe: no characters that Markdown or HTML would read as markup (no *, |, `,
brackets or tags; "<0.001" is not a tag).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lora_ablate.labels import GROUP
from lora_ablate.report.metrics import better_way, is_higher_better
from lora_ablate.report.ordering import group_label
from lora_ablate.report.tuning import split_variant


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


def _level(row: Any) -> str:
    level = getattr(row, "diff_ci_level", None)
    return "" if level is None or pd.isna(level) else f" at {100 * level:.2f}%"


def comparison(row: Any, confidence: float) -> str:
    """'all vs qv: +0.032 (interval +0.006 to +0.058 at 99.38%, over seeds+test examples;
    Holm p 0.012; 5 paired seeds)' from a summary or tuned row; the interval is the one at
    its Holm step's level, so it excludes 0 exactly when the row is resolved."""
    interval = ("no interval" if pd.isna(row.diff_ci_low) else
                f"interval {fmt_diff(row.diff_ci_low)} to {fmt_diff(row.diff_ci_high)}"
                f"{_level(row)}, over {row.diff_ci_covers}")
    stage = getattr(row, "stage", None)
    staged = f"; stage {int(stage)}" if stage is not None and not pd.isna(stage) else ""
    return (f"{_safe(row.target_set)} vs {_safe(row.baseline)}: {fmt_diff(row.diff)} "
            f"({interval}; Holm p {fmt_p(row.p_ttest_holm)}; {row.n_pairs} paired seeds{staged})")


def direction(diff: float, metric: str) -> str:
    """'lower loss by 0.032 (test/loss): better' — which way a resolved difference goes, by
    how much, and what that means for this metric (config.metrics: a loss is better lower)."""
    better = (diff > 0) == is_higher_better(metric)
    name = _safe(metric.rsplit("/", 1)[-1].replace("_", " "))
    return (f"{'higher' if diff > 0 else 'lower'} {name} by {abs(diff):.3f} ({_safe(metric)}): "
            f"{'better' if better else 'worse'}")


def _seeds(value: Any, note: Any) -> str | None:
    if value is not None and not pd.isna(value):
        return f"about {int(value)} paired seeds"
    return str(note) if isinstance(note, str) and note else None


def _unresolved(row: Any, confidence: float, effect: float) -> str:
    text = comparison(row, confidence)
    if not row.testable:
        return f"{text}, {row.test_note or 'not testable'}"
    if isinstance(row.test_note, str) and row.test_note.startswith("tie"):
        return f"{text}, {row.test_note}"
    observed = _seeds(getattr(row, "seeds_needed_observed", None),
                      getattr(row, "seeds_needed_observed_note", None))
    for_effect = _seeds(row.seeds_needed, getattr(row, "seeds_needed_note", None))
    parts = []
    if observed:
        parts.append(f"{observed} would resolve the observed difference at the family level"
                     if observed.startswith("about") else
                     f"seeds to resolve the observed difference: {observed}")
    if for_effect:
        parts.append(f"{for_effect} for a difference of {effect:g}" if for_effect.startswith(
            "about") else f"seeds for a difference of {effect:g}: {for_effect}")
    if not pd.isna(row.mde):
        parts.append(f"detectable now: {row.mde:.3f}")
    return f"{text}, " + "; ".join(parts) if parts else text


def _names(names: Sequence[str]) -> str:
    return ", ".join(_safe(n) for n in names)


def best_sentence(rows: pd.DataFrame, metric: str, baseline: str, what: str = "Best") -> str:
    """The target set with the best mean (highest, or lowest for a loss) over the seeds all
    of the group's target sets share, named best only against the sets it is resolved
    against; ties are said."""
    higher = is_higher_better(metric)
    ranked = rows[rows["rank"].notna()]
    if ranked.empty:
        return (f"No seed is shared by every target set, so none is ranked on {metric}.")
    top = ranked[ranked["rank"].eq(ranked["rank"].min())]
    k = int(top["n_common"].iloc[0])
    over = f"over the {k} seeds all target sets share" if k > 1 else \
        "on the one seed all target sets share (no interval)"
    if len(rows) == 1:
        return (f"Only {_safe(top['target_set'].iloc[0])} ran in this group (mean "
                f"{top['mean_common'].iloc[0]:.3f} {over.replace(' all target sets share', '')}).")
    if len(top) > 1:
        return (f"{what} on {metric} ({better_way(metric)}): a tie between "
                f"{_names(top['target_set'])} (mean {top['mean_common'].iloc[0]:.3f} {over}).")
    name = str(top["target_set"].iloc[0])
    mean = top["mean_common"].iloc[0]
    resolved = rows["resolved"].fillna(False).astype(bool)
    worse = (rows["diff"] < 0) if higher else (rows["diff"] > 0)
    if name == baseline:
        against = list(rows.loc[resolved & worse, "target_set"])
    else:
        row = rows[rows["target_set"].eq(name)].iloc[0]
        against = [baseline] if bool(row["resolved"]) and not bool(worse[row.name]) else []
    rest = [n for n in rows["target_set"] if n not in (name, *against)]
    rest_text = (f"; not separated from {_names(rest)} by any test" if rest else "")
    if against:
        return (f"{what} on {metric} ({better_way(metric)}): {_safe(name)}, mean {mean:.3f} "
                f"{over}, resolved better than {_names(against)}{rest_text}.")
    return (f"No target set is resolved best on {metric} ({better_way(metric)}): {_safe(name)} "
            f"has the {'highest' if higher else 'lowest'} mean "
            f"({mean:.3f} {over}) but is not separated from {_names(rest)} by any test.")


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _tune_keys(tuned: pd.DataFrame) -> list[str]:
    columns = list(tuned.columns)
    return columns[columns.index("target_set") + 1: columns.index("grid")]


def _tuned_rows(tuned: pd.DataFrame | None, key: Sequence[Any]) -> pd.DataFrame | None:
    if tuned is None or tuned.empty:
        return None
    fields = dict(zip(GROUP, key))
    rest, _ = split_variant(fields["variant"], _tune_keys(tuned))
    mask = pd.Series(True, index=tuned.index)
    for name in GROUP:
        mask &= tuned[name].astype(str).eq(str(rest if name == "variant" else fields[name]))
    return tuned[mask] if mask.any() else None


def _tuning_sentence(rows: pd.DataFrame, tune: list[str],
                     confidence: float) -> tuple[str, list[str]]:
    keys = ", ".join(tune)
    metric = str(rows["metric"].iloc[0])
    baseline = str(rows["baseline"].iloc[0])
    resolved = rows[rows["resolved"].fillna(False).astype(bool)]
    chosen = "; ".join(
        f"{_safe(r['target_set'])} at " + ", ".join(f"{k} {_value(r[k])}" for k in tune)
        + f" (n {_count(r.get('n'))}" + (f", {_count(r.get('n_lost'))} lost" if
                                          _count(r.get("n_lost")) not in ("0", "n/a") else "")
        + ")" for r in rows.to_dict("records"))
    val = str(rows["val_metric"].iloc[0]) if "val_metric" in rows else "the validation metric"
    pick = "lowest" if not is_higher_better(metric) else "highest"
    text = (f"Tuning {keys} per target set on {_safe(val)} ({pick} mean wins) chose {chosen}. "
            + best_sentence(rows, metric, baseline, what="Best after tuning")
            + " Resolved after tuning: " + ("; ".join(
                comparison(r, confidence) for r in resolved.itertuples(index=False)) or "none")
            + ".")
    edge = rows[rows["edge_of_grid"].fillna(False).astype(bool)]
    caveats = [f"{keys} chosen at the edge of its grid for "
               + ", ".join(_safe(n) for n in edge["target_set"])
               + ", so the best value may lie outside the grid"] if len(edge) else []
    if "tie_note" in rows:
        caveats += [f"{_safe(r.target_set)}: {r.tie_note}" for r in rows.itertuples(index=False)
                    if isinstance(r.tie_note, str) and r.tie_note]
    caveats.append("the tuned values were chosen on the validation metric of the same seeds "
                   "that give the test comparison, so each tuned test mean is optimistic "
                   "(selection bias; a few tenths of an accuracy point in simulation)")
    return text, caveats


def _count(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else str(int(value))


def group_verdict(key: Sequence[Any], rows: pd.DataFrame, *, tuned: pd.DataFrame | None,
                  confidence: float, effect: float, one_task: bool) -> Verdict:
    metric = rows["metric"].iloc[0]
    baseline = str(rows["baseline"].iloc[0])
    others = rows[rows["target_set"].ne(baseline)]
    parts = [best_sentence(rows, metric, baseline)]
    resolved = others[others["resolved"].fillna(False).astype(bool)]
    open_ = others[~others["resolved"].fillna(False).astype(bool)]
    if len(others):
        parts.append("Resolved against the baseline (Holm over the group's "
                     f"{len(others)} comparisons): "
                     + ("; ".join(f"{comparison(r, confidence)}, {direction(r.diff, metric)}"
                                  for r in resolved.itertuples(index=False)) or "none") + ".")
    if len(open_):
        parts.append("Not resolved: " + "; ".join(
            _unresolved(r, confidence, effect) for r in open_.itertuples(index=False)) + ".")
    caveats = []
    tuned_rows = _tuned_rows(tuned, key)
    if tuned_rows is not None:
        text, more = _tuning_sentence(tuned_rows, _tune_keys(tuned), confidence)
        parts.append(text)
        caveats += more
    problems = rows[rows["problem_seeds"].fillna("").ne("")]
    caveats += [f"{_safe(r.target_set)} {r.seeds_status} ({r.problem_seeds})"
                for r in problems.itertuples(index=False)]
    caveats += list(dict.fromkeys(n for n in rows["baseline_note"].fillna("") if n))
    caveats += _still_improving(rows)
    if one_task:
        caveats.append("one task only, so the answer may not carry over to other tasks")
    if caveats:
        parts.append("Caveats: " + "; ".join(caveats) + ".")
    title = group_label(key)
    return Verdict(tuple(key), title, f"{_safe(title)}. " + " ".join(parts))


def _still_improving(rows: pd.DataFrame) -> list[str]:
    """A caveat naming the cells whose validation metric was still improving when training
    ended (the record's convergence rule): their difference may measure speed of learning."""
    if "improving_seeds" not in rows:
        return []
    late = rows[rows["improving_seeds"].fillna("").ne("")]
    if late.empty:
        return []
    named = "; ".join(f"{_safe(r.target_set)} (seed{'s' if ',' in r.improving_seeds else ''} "
                      f"{r.improving_seeds})" for r in late.itertuples(index=False))
    return [f"still improving when training ended: {named}, so a difference to them may "
            "measure speed of learning rather than where training ends (train longer to tell)"]


def verdicts(summary: pd.DataFrame, tuned: pd.DataFrame | None = None, *,
             confidence: float = 0.95, effect: float = 0.01) -> list[Verdict]:
    """One verdict per group of the summary: the highest mean over shared seeds and what it
    is resolved against, the differences to the baseline that are resolved (by the family
    procedure, whose interval excludes 0 exactly then, with what it covers), those that are
    not and the seeds that would resolve them at the family level, the tuned comparison,
    and caveats."""
    if summary.empty:
        return []
    one_task = summary["task"].nunique() == 1
    return [group_verdict(key, rows, tuned=tuned, confidence=confidence, effect=effect,
                          one_task=one_task)
            for key, rows in summary.groupby(list(GROUP), sort=False, dropna=False)]
