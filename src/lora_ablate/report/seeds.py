"""What each run contributes to a cell's statistics: its outcome (completed, collapsed,
lacking the metric, or its status), the cell's seed status line, and the usable runs (one
completed run per (cell, seed))."""

import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.labels import CELL, GROUP
from lora_ablate.records import CORRUPT, Status
from lora_ablate.report.runs import metric_columns


def outcome(runs: pd.DataFrame, metric: str) -> pd.Series:
    """What each run contributes: completed (usable), collapsed (completed at chance),
    "no <metric>", or its status (failed, diverged, interrupted)."""
    done = runs["status"].eq(Status.completed)
    result = runs["status"].astype(object).copy()
    result[done & runs["collapsed"].fillna(False).astype(bool)] = "collapsed"
    no_metric = done & ~result.eq("collapsed")
    no_metric &= runs[metric].isna() if metric in runs else True
    result[no_metric] = f"no {metric}"
    return result


def seed_status(runs: pd.DataFrame, outcomes: pd.Series) -> pd.DataFrame:
    """Per cell: "2/3 completed, 1 diverged" over the seeds its group recorded, and the
    seeds that did not complete, by outcome."""
    real = runs[runs["status"].ne(CORRUPT)].assign(_outcome=outcomes)
    group_seeds = real.groupby(list(GROUP), dropna=False, sort=False)["seed"].nunique()
    rows = []
    for key, cell in real.groupby(list(CELL), dropna=False, sort=False):
        total = int(group_seeds.loc[key[:-1]])
        counts = cell["_outcome"].value_counts()
        collapsed = int(counts.get("collapsed", 0))
        done = int(counts.get(Status.completed, 0)) + collapsed
        parts = [f"{done}/{total} completed" + (f" ({collapsed} at chance: collapsed)" if collapsed else "")]
        parts += [f"{int(c)} {name}" for name, c in counts.items() if name not in (Status.completed, "collapsed")]
        if (missing := total - int(cell["seed"].nunique())) > 0:
            parts.append(f"{missing} missing")
        bad = cell[cell["_outcome"].ne(Status.completed)]
        problems = "; ".join(
            f"{name}: seed{'s' if len(rows_) > 1 else ''} "
            f"{', '.join(str(s) for s in sorted(rows_['seed'].dropna()))}"
            for name, rows_ in bad.groupby("_outcome", sort=True))
        improving = cell["still_improving"].fillna(False).astype(bool) & cell["_outcome"].eq(Status.completed)
        rows.append({**dict(zip(CELL, key)), "seeds_status": ", ".join(parts),
                     "problem_seeds": problems,
                     "improving_seeds": ", ".join(str(s) for s in sorted(cell.loc[improving, "seed"].dropna()))})
    return pd.DataFrame(rows, columns=[*CELL, "seeds_status", "problem_seeds", "improving_seeds"])


def usable_runs(runs: pd.DataFrame, metric: str, outcomes: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    """Completed runs with the metric, one per (cell, seed). Collapsed runs (completed at
    chance) count with the value they reached: leaving them out would credit a target set
    for the seeds it survived (survivorship); they are named in each cell's status."""
    done = runs[runs["status"].eq(Status.completed)]
    if len(done) and (metric not in runs or done[metric].isna().all()):
        present = ", ".join(metric_columns(done.dropna(axis=1, how="all"))) or "none"
        raise ConfigError(
            f"No completed run in this sweep recorded the metric {metric!r}. Metrics "
            f"present: {present}. Choose one with --metric (e.g. --metric test/accuracy)."
        )
    notes = []
    if (lacking := int(outcomes.eq(f"no {metric}").sum())):
        notes.append(f"{lacking} completed runs lack {metric} and are left out of its "
                     f"statistics")
    if (collapsed := int(outcomes.eq("collapsed").sum())):
        notes.append(f"{collapsed} completed runs collapsed to chance; they enter the "
                     f"statistics with the value they reached and are named in each cell's status")
    usable = runs[outcomes.isin([Status.completed, "collapsed"])]
    ordered = usable.assign(_end=usable["ended_at"].fillna("").astype(str)).sort_values("_end")
    unique = ordered.drop_duplicates([*CELL, "seed"], keep="last").drop(columns="_end")
    if len(unique) < len(usable):
        notes.append(f"{len(usable) - len(unique)} completed runs repeat a (cell, seed); only "
                     f"the newest of each enters the statistics")
    return unique[unique["seed"].notna()], notes
