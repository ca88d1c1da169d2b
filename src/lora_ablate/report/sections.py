"""What the report says, assembled for its templates: the overview, the run lists
(did not complete, collapsed, other, superseded, missing, corrupt), the summary tables
(compact, with the full table folded), figure entries, configuration and provenance.
render.py computes the statistics and writes the files; this module only arranges them.
"""

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lora_ablate.records import CORRUPT, Status
from lora_ablate.report.sweep_shape import distinct, sweep_config
from lora_ablate.report.escape import Markdown, md_escape
from lora_ablate.report.group_labels import GroupLabels
from lora_ablate.report.sweep import Sweep
from lora_ablate.report.tables import (Table, compact_table, frame_table, legend, md_table,
                                       summary_tables, table5_tables, tuned_tables)
from lora_ablate.report.verdict import Verdict

LIST_LIMIT = 200  # rows of failed runs / missing cells shown inline; the CSVs have them all
STATUSES = (*Status, CORRUPT)
LISTED = ("path", "run_id", "status", "task", "target_set", "seed", "ended_at", "error")
RUN_COLUMNS = ("status", "task", "target_set", "seed", "run_id", "path", "error")


@dataclass(frozen=True)
class Listing:
    """A list of rows shown in the report (at most LIST_LIMIT; the CSV has all)."""

    count: int
    table: Table | None
    more: int
    csv: str
    empty: str


def listing(frame: pd.DataFrame | None, title: str, csv: str, empty: str,
            columns: Sequence[str] | None = None) -> Listing | None:
    """A frame as a Listing; `columns` (those present) narrow a wide runs-like frame."""
    if frame is None:
        return None
    if columns is not None:
        frame = frame[[c for c in columns if c in frame]]
    shown = frame.head(LIST_LIMIT)
    return Listing(len(frame), frame_table(title, shown) if len(frame) else None,
                   max(0, len(frame) - LIST_LIMIT), csv, empty)


def md_listing(section: Listing) -> Markdown:
    """A Listing as Markdown (its cells escaped by md_table)."""
    if section.table is None:
        return Markdown(md_escape(section.empty) + "\n")
    text = md_table(section.table)
    if section.more:
        text += f"\n… and {section.more} more: see {md_escape(section.csv)}.\n"
    return Markdown(text)


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """frame[name], or a column of missing values where the frame has none."""
    return frame[name] if name in frame else pd.Series(index=frame.index, dtype=object)


def run_sections(runs: pd.DataFrame) -> tuple[str, Listing, Listing]:
    """The status counts; the runs that did not complete (failed, diverged, interrupted);
    the completed runs that collapsed to chance (they count in the statistics)."""
    counts = runs["status"].value_counts()
    collapsed = column(runs, "collapsed").fillna(False).astype(bool) & runs["status"].eq(
        Status.completed)
    text = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    if collapsed.any():
        text += f" ({int(collapsed.sum())} of the completed runs collapsed to chance)"
    unfinished = runs[runs["status"].ne(Status.completed) & runs["status"].ne(CORRUPT)]
    failed = listing(unfinished, "failed, diverged and interrupted runs", "runs.csv", "None.",
                     RUN_COLUMNS)
    fallen = listing(runs[collapsed], "completed runs at chance", "runs.csv", "None.",
                     [c for c in RUN_COLUMNS if c not in ("status", "error")])
    return text + f": {len(runs)} records in all.", failed, fallen


COLLAPSE_RULE = ("Completed runs whose predictions fell to chance; they count in the statistics "
                 "with the value they reached.")
NO_COLLAPSE_FOR_SFT = (" The rule compares classification predictions with the majority class, so "
                       "it does not apply to SFT runs (task.format=sft): they are never marked "
                       "collapsed.")


def collapse_rule(sweep: Sweep) -> str:
    """What the collapsed runs' section says the rule is, and that SFT runs are outside it."""
    def is_sft(config: Any) -> bool:
        task = config.get("task") if isinstance(config, dict) else None
        return isinstance(task, dict) and task.get("format") == "sft"
    sft = any(item.record is not None and is_sft(item.record.config) for item in sweep.records)
    return COLLAPSE_RULE + (NO_COLLAPSE_FOR_SFT if sft else "")


def overview(sweep: Sweep, missing: pd.DataFrame, metrics: dict[str, str], baseline: str,
             confidence: float, out: Path) -> list[str]:
    return [
        f"sweep directory: {sweep.path}",
        f"{len(sweep.runs)} run records; {len(missing)} cells of the expected grid missing",
        "metric: " + (", ".join(f"{t} → {m}" for t, m in metrics.items()) or "none yet"),
        f"baseline target set: {baseline}; intervals: {confidence:.0%}, Student t over seeds "
        f"for means; differences as each table's caption says; p-values Holm-adjusted over "
        f"the target sets of each group",
        f"report folder: {out}",
        f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
    ]


def provenance(sweep: Sweep) -> list[str]:
    records = [item.record for item in sweep.records if item.record is not None]
    versions = distinct(r.provenance.versions for r in records if r.provenance.versions)
    items = [f"package versions: {', '.join(f'{k} {v}' for k, v in sorted(v.items()))}"
             for v in versions]
    if len(versions) > 1:
        items.append("runs were made with different package versions (listed above)")
    runs = sweep.runs
    for name, label in (("git_commit", "git commit"), ("device_name", "device"),
                        ("device", "device type"), ("hostname", "host")):
        values = sorted(column(runs, name).dropna().astype(str).unique())
        items.append(f"{label}: {', '.join(values) or 'not recorded'}")
    items.append(f"runs started {column(runs, 'started_at').dropna().min()} and ended "
                 f"{column(runs, 'ended_at').dropna().max()}")
    return items


def configuration(sweep: Sweep) -> dict[str, Any]:
    # sweep_config reads only "config": no to_dict() of 10,000 whole records.
    shared, varying = sweep_config([{"config": item.record.config} for item in sweep.records
                                    if item.record is not None])
    lines = [f"{k} = {v}" for k, v in shared.items()]
    return {"varying": [f"{key}: {', '.join(seen[:12])}{' …' if len(seen) > 12 else ''}"
                        for key, seen in varying.items()],
            "shared": "\n".join(lines), "shared_lines": lines}


def figure_entries(paths: Iterable[Path], captions: dict[str, str]) -> list[dict[str, str]]:
    """The PNGs of `paths` with their captions (by stem) and their bytes for report.html."""
    entries = []
    for path in paths:
        if path.suffix != ".png":
            continue
        stem = re.sub(r"_\d+$", "", path.stem)
        entries.append({"file": f"figures/{path.name}", "caption": captions.get(stem, stem),
                        "data": base64.b64encode(path.read_bytes()).decode("ascii")})
    return entries


@dataclass(frozen=True)
class Results:
    """What render.py computed for the report, handed to `report_context`."""

    summary: pd.DataFrame
    tuned: pd.DataFrame | None
    missing: pd.DataFrame
    verdicts: list[Verdict]
    figures: list[dict[str, str]]
    metrics: dict[str, str]
    tune: Sequence[str]
    labels: GroupLabels


def report_context(sweep: Sweep, results: Results, *, baseline: str, confidence: float,
                   out: Path) -> dict[str, Any]:
    """The templates' context: every section of report.md and report.html."""
    runs, labels = sweep.runs, results.labels
    shown = labels.apply(results.summary)  # short group labels in every heading
    counts, failed, fallen = run_sections(runs)
    corrupt = runs.loc[runs["status"].eq(CORRUPT), ["path", "error"]]
    tuned = None if results.tuned is None else {
        "key": ", ".join(results.tune),
        "tables": tuned_tables(labels.apply(results.tuned), results.tune, confidence)}
    full = summary_tables(shown, confidence)
    return {
        "title": f"LoRA target-set ablation: {sweep.path.name}",
        "overview": overview(sweep, results.missing, results.metrics, baseline, confidence, out),
        "notes": [*sweep.notes, *results.summary.attrs.get("notes", [])],
        "verdicts": results.verdicts,
        "legend": legend(baseline, confidence),
        "groups_note": labels.footnote(),
        "summary_tables": full,
        "compact_tables": [compact_table(t) for t in full],
        "table5": table5_tables(shown, confidence),
        "tuned": tuned,
        "figures": results.figures,
        "run_counts": counts, "runs": failed, "collapsed": fallen,
        "collapse_rule": collapse_rule(sweep),
        "other_runs": listing(sweep.other, "records outside the sweep", "other_runs.csv",
                              "None.", LISTED),
        "superseded": listing(sweep.superseded, "superseded records", "superseded.csv",
                              "None.", LISTED),
        "missing": listing(results.missing, "cells of the expected grid with no record",
                           "missing.csv", "None: every cell of the grid has a record."),
        CORRUPT: listing(corrupt.rename(columns={"error": "reason"}),
                         "records that could not be read", "runs.csv", "None."),
        "config": configuration(sweep),
        "provenance": provenance(sweep),
    }
