"""The summary: one row per cell (model, task, budget, budget_scale, layers, variant,
target_set) comparing it with its group's baseline target set (compare.py holds the
statistics, baselines.py and seeds.py decide what enters them)."""

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lora_ablate.labels import CELL, GROUP
from lora_ablate.records import CORRUPT, LoadedRecord
from lora_ablate.report.baselines import baseline_notes, baseline_of, check_baseline
from lora_ablate.report.compare import COLUMNS as COMPARE_COLUMNS
from lora_ablate.report.compare import Settings, compare_group
from lora_ablate.report.examples import NOT_A_MEAN, ExampleValues, example_values, metric_name
from lora_ablate.report.metrics import is_higher_better
from lora_ablate.report.ordering import target_order
from lora_ablate.report.runs import COST
from lora_ablate.report.seeds import outcome, seed_status, usable_runs
from lora_ablate.report.staged import SeedPlan

SUMMARY_COLUMNS = (
    *CELL, "metric", "n", "n_pairs", "seeds_status", "problem_seeds", "improving_seeds",
    *[c for c in COMPARE_COLUMNS if c not in ("target_set", "n", "n_pairs")],
    "baseline_note", "lora_params", "lora_rank", *COST,
)


def _cell_info(done: pd.DataFrame) -> pd.DataFrame:
    cells = done.groupby(list(CELL), dropna=False, sort=False)
    info = cells.agg(lora_params=("lora_params", "median"), **{k: (k, "mean") for k in COST})
    info["lora_rank"] = cells["lora_rank"].agg(lambda s: "/".join(sorted(set(s.dropna()))))
    return info.reset_index()


def _pairing_notes(values: ExampleValues, done: pd.DataFrame) -> list[str]:
    """Why some runs are not paired example by example: runs without usable per-example
    values, runs of one task that scored different examples, continuous values (no McNemar)."""
    notes, split = [], values.split
    if values.problems:
        reasons = pd.Series(values.problems).value_counts()
        notes.append(f"{len(values.problems)} runs have no usable {split} per-example values ("
                     + "; ".join(f"{n}: {why}" for why, n in reasons.head(3).items())
                     + "); their comparisons use the t-interval over seeds only")
    ids = pd.Series(values.examples, dtype="int64")
    for task, index in done.groupby("task").groups.items():
        kinds = ids.reindex(index).dropna().nunique()
        if kinds > 1:
            notes.append(f"the {split} {values.identity} differ between runs of task {task} "
                         f"({kinds} different vectors), so runs with different "
                         f"{values.identity} are not paired example by example")
    if values.by_run and not values.binary:
        notes.append(f"McNemar per seed is left out for {values.metric}: its per-example "
                     f"values are continuous (McNemar needs 0/1 values)")
    return notes


def _seeds_only_note(metric: str) -> list[str]:
    why = NOT_A_MEAN.get(metric_name(metric))
    return [f"{metric}: {why}, so its comparisons pair on seeds only (the SE has no "
            f"set × example term)"] if why else []


def compare_frame(done: pd.DataFrame, metric: str, baseline: str, settings: Settings,
                  loaded: Sequence[LoadedRecord] | None,
                  group: Sequence[str] = GROUP) -> tuple[pd.DataFrame, list[str]]:
    """compare_group over every group of `done` (usable runs, one per (cell, seed)), the
    baseline falling back per group; rows keyed by the group columns and target_set."""
    notes: list[str] = _seeds_only_note(metric)
    examples = None
    if loaded is not None and metric.startswith("test/"):
        examples = example_values(loaded, done.index, metric)
        notes += _pairing_notes(examples, done) if examples is not None else []
    values = done.assign(value=done[metric], run=done.index)
    parts = []
    for key, rows in values.groupby(list(group), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        chosen = baseline_of(rows, baseline)
        group_notes = baseline_notes(key, rows, baseline, chosen)
        notes += group_notes
        table = compare_group(rows[["target_set", "seed", "value", "run"]], chosen, examples,
                              settings)
        parts.append(table.assign(**dict(zip(group, key)), baseline_note=" ".join(group_notes)))
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), notes


def _summarize_metric(runs: pd.DataFrame, metric: str, baseline: str, settings: Settings,
                      loaded: Sequence[LoadedRecord] | None) -> tuple[pd.DataFrame, list[str]]:
    outcomes = outcome(runs[runs["status"].ne(CORRUPT)], metric)
    done, notes = usable_runs(runs[runs["status"].ne(CORRUPT)], metric, outcomes)
    if done.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), notes
    table, more = compare_frame(done, metric, baseline, settings, loaded)
    table = table.merge(_cell_info(done), on=list(CELL), how="left").merge(
        seed_status(runs, outcomes), on=list(CELL), how="left")
    return table.assign(metric=metric), notes + more


def summarize(runs: pd.DataFrame, *, metric: str | Mapping[str, str] = "test/accuracy",
              baseline: str = "qv", confidence: float = 0.95,
              higher_is_better: bool | None = None, alpha: float | None = None,
              loaded: Sequence[LoadedRecord] | None = None,
              effect: float = 0.01, seed_plan: SeedPlan | None = None) -> pd.DataFrame:
    """One row per cell (SUMMARY_COLUMNS): n, the status of its seeds, the mean over the
    seeds it shares with its group's baseline (the unpaired mean beside it) with a
    t-interval over seeds, and the paired difference to the baseline decided by the family
    procedure (family.py): t p Holm-adjusted over every non-baseline target set of the
    group, "resolved", and the interval at the level of its Holm step (its SE holds the
    set × example term when `loaded` gives per-example values of the metric: accuracy,
    SFT loss, token accuracy, exact match, examples.py; `diff_ci_covers` says so), with the plain per-comparison interval beside it; sign-flip
    and Wilcoxon p, McNemar per seed by direction (0/1 values only), and family-level planning (MDE, seeds
    for the observed difference and for `effect`). Ranks compare the means over the seeds
    every target set of the group shares.

    The baseline is `baseline`, or in a group without it the first target set of
    TARGET_ORDER present (noted). Collapsed and failed runs are left out and named in
    `seeds_status`. `metric` may map task -> metric; `higher_is_better` None guesses from
    the metric name. With `seed_plan` (an adaptive sweep's design) each group's family
    follows staged.staged_family and `stage` says which stage concluded each row. Notes are
    in `attrs["notes"]`."""
    check_baseline(runs, baseline)
    per_task = metric.items() if isinstance(metric, Mapping) else [(None, metric)]
    parts, notes = [], []
    for task, name in per_task:
        subset = runs if task is None else runs[runs["task"].eq(task)]
        better = is_higher_better(name) if higher_is_better is None else higher_is_better
        # one level for the intervals, "resolved" and an adaptive design's stages
        family_alpha = 1 - confidence if alpha is None else alpha
        settings = Settings(confidence=confidence, alpha=family_alpha, higher_is_better=better,
                            effect=effect, seed_plan=seed_plan)
        table, part_notes = _summarize_metric(subset, name, baseline, settings, loaded)
        parts.append(table)
        notes += part_notes
    return ordered_table(parts, SUMMARY_COLUMNS, notes)


def ordered_table(parts: list[pd.DataFrame], columns: Sequence[str], notes: list[str],
             group: Sequence[str] = GROUP) -> pd.DataFrame:
    """`parts` as one table with `columns`: rows by group, then target set in the
    conventional order; counts as Int64 and flags as boolean (both nullable), `notes` in
    `attrs["notes"]`."""
    empty = pd.DataFrame(columns=list(columns))
    table = pd.concat([p for p in parts if len(p)] or [empty], ignore_index=True)
    table = table.assign(_order=target_order(table["target_set"])).sort_values(
        [*group, "_order", "target_set"], na_position="last", kind="stable")
    table = table.reindex(columns=list(columns)).reset_index(drop=True)
    for column in ("n", "n_pairs", "n_common", "rank", "holm_step", "mcnemar_seeds_better",
                   "mcnemar_seeds_worse", "seeds_needed", "seeds_needed_observed", "stage"):
        if column in table:
            values = pd.to_numeric(table[column]).astype("float64")
            table[column] = values.where(np.isfinite(values)).round().astype("Int64")
    for column in ("significant", "resolved", "testable", "rank_tied", "rank_tests_can_reach_alpha"):
        if column in table:
            table[column] = table[column].astype("boolean")
    table.attrs["notes"] = notes
    return table
