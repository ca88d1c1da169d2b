"""Stage 2 of an adaptive-seeds sweep, decided from its stage-1 records alone: the report's
own comparison (summarize, on the stage-1 seeds, under the sweep's SeedPlan) marks the
comparisons that stage_one continues, so the sweeper and the report agree on them."""

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lora_ablate.labels import GROUP
from lora_ablate.report.baselines import default_baseline
from lora_ablate.report.ordering import group_label
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.sweep import load_sweep, summarize


@dataclass(frozen=True)
class Continuation:
    """One group's stage-1 outcome: its baseline and the target sets that continue."""

    group: str  # "model=…, task=…" as the report names groups
    baseline: str
    continuing: tuple[str, ...]


@dataclass(frozen=True)
class StageTwo:
    continuations: tuple[Continuation, ...]
    run_dirs: frozenset[str]  # stage-1 run folders whose cell gets the new seeds

    def line(self, cells: int) -> str:
        """The sweeper's one log line."""
        going = [f"{c.group or 'all runs'}: {', '.join(c.continuing)} (baseline {c.baseline})"
                 for c in self.continuations if c.continuing]
        return (f"adaptive seeds: stage 1 continues {'; '.join(going) or 'no target set'}; "
                f"stage 2 adds {cells} cells")


def stage_two(sweep_dir: Path, plan: SeedPlan, *, metric: str | None,
              baseline: str | None) -> StageTwo:
    """Which target sets continue in each group (stage_one on the stage-1 seeds' records)
    and the stage-1 run folders of those sets and of their groups' baselines."""
    sweep = load_sweep(sweep_dir)
    if sweep.runs.empty:
        return StageTwo((), frozenset())
    runs = sweep.runs[sweep.runs["seed"].isin(plan.stage1_seeds).fillna(False).astype(bool)]
    stage1 = dataclasses.replace(sweep, runs=runs, seed_plan=plan)
    chosen = baseline or default_baseline(runs)[0]
    summary = summarize(stage1, metric=metric, baseline=chosen)
    if summary.empty:
        return StageTwo((), frozenset())
    continuations, keep = [], set()
    for key, rows in summary.groupby(list(GROUP), dropna=False, sort=False):
        going = tuple(rows.loc[rows["stage"].eq(2).fillna(False).astype(bool), "target_set"])
        base = str(rows["baseline"].iloc[0])
        label = group_label(key)
        continuations.append(Continuation(label, base, going))
        if going:
            keep.update((_key(key), name) for name in (*going, base))
    cells = runs[[*GROUP, "target_set", "path"]].dropna(subset=["target_set"])
    dirs = frozenset(str(path).rpartition("/")[0] for *key, name, path in cells.itertuples(index=False)
                     if (_key(key), name) in keep)
    return StageTwo(tuple(continuations), dirs)


def _key(values: Iterable[object]) -> tuple[str, ...]:
    """A group's labels comparable across frames (a missing label is "", never NaN ≠ NaN)."""
    return tuple("" if pd.isna(v) else str(v) for v in values)
