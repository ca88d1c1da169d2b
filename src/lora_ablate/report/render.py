"""Sweep directory -> report folder (default SWEEP_DIR/report/): runs, summary, Table 5 and
missing cells as CSV, the summary as Markdown and LaTeX, figures as PNG and SVG, and
report.md / report.html from the Jinja2 templates in templates/. Every file is written
atomically, so a reader polling a running sweep never sees half a file.

Data from the records is never markup: report.html autoescapes, report.md escapes every
value (escape.md_finalize), CSV cells that a spreadsheet would run are defused.
"""

import argparse
import dataclasses
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.files import write_atomic
from lora_ablate.report import tuning
from lora_ablate.labels import GROUP
from lora_ablate.report.baselines import check_baseline, default_baseline
from lora_ablate.report.ordering import group_label
from lora_ablate.report.sweep_shape import missing_cells
from lora_ablate.report.analysis_section import CAPTIONS as ANALYSIS_CAPTIONS
from lora_ablate.report.analysis_section import analysis_figures, mechanism_sentence, routing_sentence
from lora_ablate.report.escape import Markdown, md_escape, md_finalize, tex_escape, to_csv
from lora_ablate.report.group_labels import GroupLabels
from lora_ablate.report.plots import CAPTIONS, report_figures, write_figures
from lora_ablate.report.sections import Results, figure_entries, md_listing, report_context
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.sweep import Sweep, curves, load_sweep, no_cyclic_gc, summarize
from lora_ablate.report.tables import (MARK, legend, md_table, summary_tables, table5_frame,
                                       table5_tables, tex_table)
from lora_ablate.report.verdict import Verdict, verdicts

FIGURE_CAPTIONS = CAPTIONS | ANALYSIS_CAPTIONS


# ---------------------------------------------------------------- the statistics' entry points
# The one place the verdicts and the tuned comparison enter the report (tests replace
# them to check where and how their text is shown).


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
                 tuned: pd.DataFrame | None, baseline: str, confidence: float,
                 labels: GroupLabels) -> dict[str, str]:
    """The CSVs (full variants, every column) and the summary as Markdown and LaTeX (short
    group labels, with the footnote that says what they leave out)."""
    shown = labels.apply(summary)
    summaries, table5 = summary_tables(shown, confidence), table5_tables(shown, confidence)
    note = labels.footnote() or ""
    head = f"{legend(baseline, confidence)} {note}".strip()
    extra = {"tuned.csv": tuned, "superseded.csv": sweep.superseded,
             "other_runs.csv": sweep.other}
    return {
        "runs.csv": to_csv(sweep.runs),
        "summary.csv": to_csv(summary),
        "table5.csv": to_csv(table5_frame(summary)),
        "missing.csv": to_csv(missing),
        **{name: to_csv(frame) for name, frame in extra.items() if frame is not None},
        "summary.md": "\n".join([f"{legend(baseline, confidence)} {md_escape(note)}".strip() + "\n",
                                 *map(md_table, table5), *map(md_table, summaries)]),
        "summary.tex": "% LaTeX tables; needs \\usepackage{booktabs}\n"
                       + f"% {tex_escape(head)}\n"
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
    labels = GroupLabels.of_frame(sweep.runs)  # every frame below has the runs' variants
    for name, text in _table_files(sweep, summary, missing, tuned, baseline, confidence,
                                   labels).items():
        write_atomic(out / name, text)
    drawn = report_figures(labels.apply(summary), labels.apply(sweep.runs),
                           labels.apply(curves(sweep, metric)), baseline=baseline,
                           confidence=confidence)
    drawn |= analysis_figures(sweep, baseline=baseline, confidence=confidence,
                              relabel=labels.apply)
    if mechanism := mechanism_sentence(sweep, confidence=confidence):
        sweep.notes.append(mechanism)
    if routing := routing_sentence(sweep, confidence=confidence):
        sweep.notes.append(routing)
    figures = write_figures(drawn, out / "figures")
    _remove_stale(out / "figures", figures)
    paragraphs = _with_design(verdict_paragraphs(summary, tuned, confidence), sweep.seed_plan)
    results = Results(summary, tuned, missing, _short_titles(paragraphs, labels),
                      figure_entries(figures, FIGURE_CAPTIONS), metrics, tuple(tune), labels)
    context = report_context(sweep, results, baseline=baseline, confidence=confidence, out=out)
    write_atomic(out / "report.md", render("report.md.j2", context))
    write_atomic(out / "report.html", render("report.html.j2", context))
    return out


def _with_design(paragraphs: list[Verdict], plan: SeedPlan | None) -> list[Verdict]:
    """An adaptive sweep's verdicts end with its design, which their Holm levels follow."""
    if plan is None:
        return paragraphs
    return [dataclasses.replace(v, text=f"{v.text} {plan.sentence()}") for v in paragraphs]


def _short_titles(paragraphs: list[Verdict], labels: GroupLabels) -> list[Verdict]:
    """Verdicts titled with their group's short label. A verdict's text opens with its
    title, made Markdown-safe character for character, so the title's length cuts it."""
    out = []
    for v in paragraphs:
        key = dict(zip(GROUP, v.group))
        if "variant" not in key or labels.label(str(key["variant"])) == key["variant"]:
            out.append(v)
            continue
        title = group_label(tuple({**key, "variant": labels.label(key["variant"])}.values()))
        safe = title.replace("*", "\u2217").replace("|", "/").replace("`", "'")
        out.append(dataclasses.replace(v, title=title, text=safe + v.text[len(v.title):]))
    return out


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
