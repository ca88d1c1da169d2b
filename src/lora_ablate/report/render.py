"""Sweep directory -> report folder (default SWEEP_DIR/report/): runs, summary, Table 5 and
missing cells as CSV, the summary as Markdown and LaTeX, figures as PNG and SVG, and
report.md / report.html from the Jinja2 templates in templates/. Every file is written
atomically, so a reader polling a running sweep never sees half a file.

Data from the records is never markup: report.html autoescapes, report.md escapes every
value (escape.md_finalize), CSV cells that a spreadsheet would run are defused.
"""

import argparse
import base64
import re
import sys
from collections.abc import Iterable, Sequence
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.files import write_atomic
from lora_ablate.records import CORRUPT, Status
from lora_ablate.report import tuning
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.verdict import Verdict, verdicts
from lora_ablate.report.aggregate import (check_baseline, default_baseline, distinct, missing_cells,
                                          sweep_config)
from lora_ablate.report.escape import Markdown, md_escape, md_finalize, tex_escape, to_csv
from lora_ablate.report.analysis_section import CAPTIONS as ANALYSIS_CAPTIONS
from lora_ablate.report.analysis_section import analysis_figures, mechanism_sentence, routing_sentence
from lora_ablate.report.plots import CAPTIONS, report_figures, write_figures

FIGURE_CAPTIONS = CAPTIONS | ANALYSIS_CAPTIONS
from lora_ablate.report.sweep import Sweep, curves, load_sweep, no_cyclic_gc, summarize
from lora_ablate.report.tables import (MARK, Table, frame_table, legend, md_table,
                                       summary_tables, table5_frame, table5_tables, tex_table,
                                       tuned_tables)

LIST_LIMIT = 200  # rows of failed runs / missing cells shown inline; the CSVs have them all
STATUSES = (*Status, CORRUPT)


# ---------------------------------------------------------------- hooks for the stats side
# aggregate.py is being extended (verdicts, tuning, superseded and other records); these
# are the one place each of its results enters the report. Until wired they return nothing
# and the report leaves the section out.


def verdict_paragraphs(summary: pd.DataFrame, tuned: pd.DataFrame | None,
                       confidence: float) -> list[Verdict]:
    """One paragraph per group, opening the report; its numbers come from `summary` (and
    `tuned`) only."""
    return verdicts(summary, tuned, confidence=confidence) if len(summary) else []


def tuned_frame(sweep: Sweep, tune: Sequence[str], *, metric: str | None, baseline: str,
                confidence: float) -> pd.DataFrame | None:
    """Per target set at its own best value of the `tune` keys (chosen on the validation
    metric) compared on the test metric; written as tuned.csv, shown after the summary."""
    if not tune or not sweep.completed:
        return None
    compared = metric or next(iter(sweep.metrics().values()), "test/accuracy")
    return tuning.tuned_frame(sweep.runs, tune=tuple(tune), metric=compared, baseline=baseline,
                              loaded=sweep.records, confidence=confidence)


def superseded_frame(sweep: Sweep) -> pd.DataFrame | None:
    """HOOK(superseded): older records of a (cell, seed) that a newer completed one
    replaces in the statistics (path, run_id, status, ended_at, …)."""
    return sweep.superseded


def other_runs_frame(sweep: Sweep) -> pd.DataFrame | None:
    """HOOK(other runs): records in the folder that are not cells of the sweep's manifest."""
    return sweep.other


# ---------------------------------------------------------------- report sections


@dataclass(frozen=True)
class Listing:
    """A list of rows shown in the report (at most LIST_LIMIT; the CSV has all)."""

    count: int
    table: Table | None
    more: int
    csv: str
    empty: str


LISTED = ("path", "run_id", "status", "task", "target_set", "seed", "ended_at", "error")


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


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(index=frame.index, dtype=object)


def _runs_section(runs: pd.DataFrame) -> tuple[str, Listing]:
    """The status counts and the runs that did not complete (or collapsed)."""
    counts = runs["status"].value_counts()
    collapsed = _column(runs, "collapsed").fillna(False).astype(bool) & runs["status"].eq(
        Status.completed)
    text = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    if collapsed.any():
        text += f" ({int(collapsed.sum())} of the completed runs collapsed to chance)"
    problems = runs[(runs["status"].ne(Status.completed) & runs["status"].ne(CORRUPT)) | collapsed]
    columns = [c for c in ("status", "collapsed", "task", "target_set", "seed", "run_id", "path",
                           "error") if c in problems]
    section = listing(problems[columns], "failed, diverged, interrupted and collapsed runs",
                      "runs.csv", "None.")
    return text + f": {len(runs)} records in all.", section


def _overview(sweep: Sweep, missing: pd.DataFrame, metrics: dict[str, str], baseline: str,
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
    for column, label in (("git_commit", "git commit"), ("device_name", "device"),
                          ("device", "device type"), ("hostname", "host")):
        values = sorted(_column(runs, column).dropna().astype(str).unique())
        items.append(f"{label}: {', '.join(values) or 'not recorded'}")
    items.append(f"runs started {_column(runs, 'started_at').dropna().min()} and ended "
                 f"{_column(runs, 'ended_at').dropna().max()}")
    return items


def _config(sweep: Sweep) -> dict[str, Any]:
    # sweep_config reads only "config": no to_dict() of 10,000 whole records.
    shared, varying = sweep_config([{"config": item.record.config} for item in sweep.records
                                    if item.record is not None])
    lines = [f"{k} = {v}" for k, v in shared.items()]
    return {"varying": [f"{key}: {', '.join(seen[:12])}{' …' if len(seen) > 12 else ''}"
                        for key, seen in varying.items()],
            "shared": "\n".join(lines), "shared_lines": lines}


def _figure_entries(paths: Iterable[Path], folder: Path) -> list[dict[str, str]]:
    entries = []
    for path in paths:
        if path.suffix != ".png":
            continue
        stem = re.sub(r"_\d+$", "", path.stem)
        entries.append({"file": f"figures/{path.name}", "caption": FIGURE_CAPTIONS.get(stem, stem),
                        "data": base64.b64encode(path.read_bytes()).decode("ascii")})
    return entries


# ---------------------------------------------------------------- templates


def _environment(markdown: bool) -> jinja2.Environment:
    loader = jinja2.PackageLoader("lora_ablate.report", "templates")
    if markdown:
        env = jinja2.Environment(loader=loader, autoescape=False, finalize=md_finalize,
                                 keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
        env.globals["md_table"] = lambda t: Markdown(md_table(t))
        env.globals["md_listing"] = md_listing
        return env
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def render(template: str, context: dict[str, Any]) -> str:
    env = _environment(markdown=template.endswith(".md.j2"))
    return env.get_template(template).render(mark=MARK, **context)


# ---------------------------------------------------------------- writing the report


def _remove_stale(folder: Path, keep: Iterable[Path]) -> None:
    """Drop figures of an earlier report that this one did not redraw (only the report's
    own figure names: the folder may be one the user chose)."""
    names = {p.name for p in keep}
    ours = re.compile(rf"^({'|'.join(FIGURE_CAPTIONS)}|forest)(_\d+)?\.(png|svg)$")
    for path in folder.glob("*.*"):
        if ours.match(path.name) and path.name not in names:
            path.unlink(missing_ok=True)


def _table_files(sweep: Sweep, summary: pd.DataFrame, missing: pd.DataFrame,
                 tuned: pd.DataFrame | None, baseline: str,
                 confidence: float) -> dict[str, str]:
    summaries, table5 = summary_tables(summary, confidence), table5_tables(summary, confidence)
    extra = {"tuned.csv": tuned, "superseded.csv": superseded_frame(sweep),
             "other_runs.csv": other_runs_frame(sweep)}
    return {
        "runs.csv": to_csv(sweep.runs),
        "summary.csv": to_csv(summary),
        "table5.csv": to_csv(table5_frame(summary)),
        "missing.csv": to_csv(missing),
        **{name: to_csv(frame) for name, frame in extra.items() if frame is not None},
        "summary.md": "\n".join([legend(baseline, confidence) + "\n",
                                 *map(md_table, table5), *map(md_table, summaries)]),
        "summary.tex": "% LaTeX tables; needs \\usepackage{booktabs}\n"
                       + f"% {tex_escape(legend(baseline, confidence))}\n"
                       + "\n".join(map(tex_table, [*table5, *summaries])),
    }


def _check_options(confidence: float, tune: Sequence[str]) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}.")
    bad = [key for key in tune if not re.fullmatch(r"[A-Za-z_][\w.]*", key)]
    if bad:
        raise ConfigError(f"--tune takes config keys such as train.lr; {bad[0]!r} is not one.")


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *,
                 baseline: str | None = None, metric: str | None = None, confidence: float = 0.95,
                 tune: Sequence[str] = ()) -> Path:
    """Aggregate every run record under `sweep_dir` into `out_dir` (default
    SWEEP_DIR/report) and return that folder. `metric` None compares each task on its
    configured metric (test/<task.metric>); `baseline` None compares with qv where the
    sweep has it, else with its first target set; `tune` names swept keys (e.g. train.lr)
    each target set is compared at its own best value of."""
    _check_options(confidence, tune)
    with no_cyclic_gc():
        return _write_report(Path(sweep_dir), out_dir, baseline, metric, confidence, tune)


def _write_report(sweep_dir: Path, out_dir: str | Path | None, baseline: str | None,
                  metric: str | None, confidence: float, tune: Sequence[str]) -> Path:
    sweep = load_sweep(sweep_dir)
    if not sweep.records:
        raise ConfigError(f"There are no run records under {sweep.path}: no result.json was "
                          f"found in it or below it. Runs write one when they end, so check "
                          f"the path, or wait until the first run of the sweep finishes.")
    out = Path(out_dir) if out_dir is not None else sweep.path / "report"
    if baseline is None:
        baseline, why = default_baseline(sweep.runs)
        if why:
            sweep.notes.append(why)
    check_baseline(sweep.runs, baseline)
    metrics = sweep.metrics(metric)
    summary = summarize(sweep, metric=metric, baseline=baseline, confidence=confidence)
    tuned = tuned_frame(sweep, tune, metric=metric, baseline=baseline,
                        confidence=confidence) if tune else None
    missing = missing_cells(sweep.runs)
    for name, text in _table_files(sweep, summary, missing, tuned, baseline,
                                   confidence).items():
        write_atomic(out / name, text)
    drawn = report_figures(summary, sweep.runs, curves(sweep, metric), baseline=baseline,
                           confidence=confidence)
    drawn |= analysis_figures(sweep, baseline=baseline, confidence=confidence)
    if mechanism := mechanism_sentence(sweep, confidence=confidence):
        sweep.notes.append(mechanism)
    if routing := routing_sentence(sweep, confidence=confidence):
        sweep.notes.append(routing)
    figures = write_figures(drawn, out / "figures")
    _remove_stale(out / "figures", figures)
    context = _context(sweep, summary, tuned, missing, figures, metrics, tune, baseline,
                       confidence, out)
    write_atomic(out / "report.md", render("report.md.j2", context))
    write_atomic(out / "report.html", render("report.html.j2", context))
    return out


def _with_design(paragraphs: list[Verdict], plan: SeedPlan | None) -> list[Verdict]:
    """An adaptive sweep's verdicts end with its design, which their Holm levels follow."""
    if plan is None:
        return paragraphs
    return [dataclasses.replace(v, text=f"{v.text} {plan.sentence()}") for v in paragraphs]


def _context(sweep: Sweep, summary: pd.DataFrame, tuned: pd.DataFrame | None,
             missing: pd.DataFrame, figures: list[Path], metrics: dict[str, str],
             tune: Sequence[str], baseline: str, confidence: float, out: Path) -> dict:
    runs = sweep.runs
    counts, problems = _runs_section(runs)
    corrupt = runs.loc[runs["status"].eq(CORRUPT), ["path", "error"]]
    tuned_table = None if tuned is None else {"key": ", ".join(tune),
                                              "tables": tuned_tables(tuned, tune, confidence)}
    return {
        "title": f"LoRA target-set ablation: {sweep.path.name}",
        "overview": _overview(sweep, missing, metrics, baseline, confidence, out),
        "notes": [*sweep.notes, *summary.attrs.get("notes", [])],
        "verdicts": _with_design(verdict_paragraphs(summary, tuned, confidence), sweep.seed_plan),
        "legend": legend(baseline, confidence),
        "summary_tables": summary_tables(summary, confidence),
        "table5": table5_tables(summary, confidence),
        "tuned": tuned_table,
        "figures": _figure_entries(figures, out),
        "run_counts": counts, "runs": problems,
        "other_runs": listing(other_runs_frame(sweep), "records outside the sweep",
                              "other_runs.csv", "None.", LISTED),
        "superseded": listing(superseded_frame(sweep), "superseded records",
                              "superseded.csv", "None.", LISTED),
        "missing": listing(missing, "cells of the expected grid with no record",
                           "missing.csv", "None: every cell of the grid has a record."),
        CORRUPT: listing(corrupt.rename(columns={"error": "reason"}),
                           "records that could not be read", "runs.csv", "None."),
        "config": _config(sweep),
        "provenance": provenance(sweep),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lora-ablate-report",
        description="Aggregate the run records of a sweep into a report folder (CSV, "
                    "Markdown and LaTeX tables, figures, report.md, report.html).")
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--baseline", default=None,
                        help="target set every other one is compared with (default: qv)")
    parser.add_argument("--metric", default=None,
                        help="metric to compare, e.g. test/accuracy (default: each task's "
                             "configured metric)")
    parser.add_argument("--tune", action="append", default=[], metavar="KEY",
                        help="swept config key to tune per target set on the validation "
                             "metric, e.g. train.lr (repeatable)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder to write the report to (default: SWEEP_DIR/report)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence level of the intervals (default: 0.95)")
    args = parser.parse_args(argv)
    try:
        folder = write_report(args.sweep_dir, args.out, baseline=args.baseline,
                              metric=args.metric, confidence=args.confidence, tune=args.tune)
    except ConfigError as err:
        print(f"lora-ablate-report: error: {err}", file=sys.stderr)
        return 2
    print(folder)
    from lora_ablate.report.corrupt import warn_corrupt  # noqa: PLC0415 (CLI only)

    warn_corrupt(folder, args.sweep_dir, "lora-ablate-report")
    return 0
