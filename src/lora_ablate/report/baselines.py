"""The baseline target set every other one is compared with: the sweep's choice, checked
against the target sets present, and per group the one actually used (a group without it
falls back to the first target set of the conventional order), with notes saying so."""

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.records import CORRUPT
from lora_ablate.report.ordering import group_label, target_order


def default_baseline(runs: pd.DataFrame) -> tuple[str, str | None]:
    """qv when the sweep has it (the LoRA paper's habit this tool tests), else the first
    target set in the conventional order, with a note saying so."""
    present = runs.loc[runs["status"].ne(CORRUPT), "target_set"].dropna().drop_duplicates()
    if not len(present) or "qv" in set(present):
        return "qv", None
    first = present.iloc[target_order(present).argsort(kind="stable")].iloc[0]
    return str(first), (f"this sweep has no qv runs, so every target set is compared with "
                        f"{first}, its first target set (choose another with report.baseline=...)")


def check_baseline(runs: pd.DataFrame, baseline: str) -> None:
    """ConfigError when the baseline occurs nowhere in the sweep (a group without it falls
    back to another target set, with a note)."""
    present = runs.loc[runs["status"].ne(CORRUPT), "target_set"].dropna().drop_duplicates()
    if len(present) and baseline not in set(present):
        names = ", ".join(present.iloc[target_order(present).argsort(kind="stable")])
        raise ConfigError(
            f"The baseline target set {baseline!r} does not occur in this sweep, so there is "
            f"nothing to compare against. Target sets present: {names}. Pass one of them "
            f"with --baseline (or report.baseline=... on the lora-ablate command line)."
        )


def baseline_of(group: pd.DataFrame, baseline: str) -> str:
    """The baseline used in `group`: `baseline` when the group has it, else its first
    target set in the conventional order."""
    if group["target_set"].eq(baseline).any():
        return baseline
    names = group["target_set"].drop_duplicates()
    return str(names.iloc[target_order(names).argsort(kind="stable")].iloc[0])


def baseline_notes(key: Sequence[Any], group: pd.DataFrame, wanted: str,
                    chosen: str) -> list[str]:
    """What a reader of group `key` must know about its baseline: `chosen` replaces the
    `wanted` one, or `chosen` lacks seeds that other target sets have."""
    label = group_label(key)
    if chosen != wanted:
        return [f"baseline {wanted!r} has no completed runs in {label}; {chosen!r} (first "
                f"of the conventional order present) is the baseline there"]
    lacking = sorted(set(group["seed"].dropna()) - set(
        group.loc[group["target_set"].eq(chosen), "seed"].dropna()))
    if lacking:
        return [f"baseline {chosen!r} lacks seed{'s' if len(lacking) > 1 else ''} "
                f"{', '.join(map(str, lacking))} in {label}; comparisons there use the seeds "
                f"both target sets have"]
    return []
