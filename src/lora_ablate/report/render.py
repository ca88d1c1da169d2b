"""Sweep directory -> SWEEP_DIR/report/: runs and summary as CSV, Markdown and LaTeX tables
(per group and in the layout of the LoRA paper's Table 5), figures, report.md and a
self-contained report.html. Every file is written atomically, so a reader polling a running
sweep never sees half a file.
"""

import argparse
import base64
import gc
import html
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from lora_ablate.report.aggregate import (GROUP, check_baseline, curves_frame, distinct,
                                   missing_cells, resolve_metrics, runs_frame, summarize,
                                   sweep_config, target_order)
from lora_ablate.errors import ConfigError
from lora_ablate.report.plots import drawing_figures, write_atomic
from lora_ablate.records import LoadedRecord, find_records

LIST_LIMIT = 200  # rows of failed runs / missing cells shown inline; the CSVs have them all
MARK = "†"
TEX_ESCAPES = MappingProxyType({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--", "Δ": r"$\Delta$", "×": r"$\times$", "·": r"$\cdot$",
    "<": r"$<$", ">": r"$>$", "—": "---", MARK: r"$^\dagger$",
})
CAPTIONS = MappingProxyType({
    "means": "Mean metric per target set with its t-interval over seeds; baseline in black.",
    "forest": "Paired difference to the baseline over shared seeds, with the t-interval of "
              "the differences.",
    "curves": "Validation metric during training: mean over seeds with a ±1 std band.",
    "budget": "Metric against the trainable-parameter budget.",
    "cost": "Quality against cost, with the Pareto front.",
    "heatmap": "Mean metric per target set and task.",
})
CSS = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.4em 0 1.6em;font-size:.88em}
th,td{padding:.22em .6em;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
img{max-width:100%}figure{margin:1em 0 2em}figcaption{color:#555;font-size:.9em}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:.85em}td.txt{text-align:left}"""


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False  # best mean of its group
    mark: bool = False  # significantly different from the baseline


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    text_columns: int = 1  # leading columns aligned left; the rest are numbers, aligned right


def _num(x: Any, fmt: str = ".3f") -> str:
    return "–" if pd.isna(x) else format(x, fmt)


def _p(x: Any) -> str:
    return "–" if pd.isna(x) else "<0.001" if x < 0.001 else f"{x:.3f}"


def _mean_ci(mean: Any, half: Any) -> str:
    return _num(mean) if pd.isna(half) else f"{mean:.3f} ± {half:.3f}"


def _flag(value: Any) -> bool:
    return bool(value) if not pd.isna(value) else False


def legend(baseline: str, confidence: float) -> str:
    return (f"Mean ± half-width of the {confidence:.0%} t-interval over seeds. Bold: best mean "
            f"of its group. {MARK}: differs from the baseline {baseline} (paired t-test over "
            f"shared seeds, Holm-adjusted p < 0.05). Δ: mean paired difference to {baseline}.")


def summary_tables(summary: pd.DataFrame, baseline: str) -> list[Table]:
    """One table per (model, task, budget, budget_scale): a row per target set."""
    columns = ("target set", "LoRA rank", "# params", "n", "mean ± CI", f"Δ vs {baseline}",
               "p (t, Holm)", "p (Wilcoxon, Holm)", "rank")
    tables = []
    for key, rows in summary.groupby(list(GROUP), sort=False, dropna=False):
        body = tuple(
            (Cell(r.target_set), Cell(r.lora_rank or "–"), Cell(_num(r.lora_params, ",.0f")),
             Cell(str(r.n)),
             Cell(_mean_ci(r.mean, r.ci_half), _flag(r.rank == 1), _flag(r.significant)),
             Cell(_num(r.diff, "+.3f")), Cell(_p(r.p_ttest_holm)), Cell(_p(r.p_wilcoxon_holm)),
             Cell(_num(r.rank, "d")))
            for r in rows.itertuples(index=False))
        model, task, budget, scale, _layers, variant = key
        title = f"{model} · {task} · budget {budget} ×{scale:g}{_variant(variant)} — {rows['metric'].iloc[0]}"
        tables.append(Table(title, columns, body))
    return tables


def _variant(variant: Any) -> str:
    return f" · {variant}" if isinstance(variant, str) and variant else ""


def _ordered_sets(frame: pd.DataFrame) -> list[str]:
    names = frame.drop_duplicates("target_set")
    ordered = names.assign(_o=target_order(names["target_set"])).sort_values("_o")
    return list(ordered["target_set"])


def table5_tables(summary: pd.DataFrame) -> list[Table]:
    """Rows = target sets (with LoRA rank and # params), columns = tasks, cells mean ± CI:
    the layout of the LoRA paper's Table 5, one per (model, budget, budget_scale)."""
    tables = []
    for (model, budget, scale, variant), group in summary.groupby(
            ["model", "budget", "budget_scale", "variant"], sort=True, dropna=False):
        tasks = group.drop_duplicates("task")[["task", "metric"]].to_numpy()
        cells = group.set_index(["target_set", "task"])
        rows = []
        for name in _ordered_sets(group):
            first = cells.loc[name].iloc[0]
            row = [Cell(name), Cell(first["lora_rank"] or "–"),
                   Cell(_num(first["lora_params"], ",.0f"))]
            for task, _ in tasks:
                if (name, task) not in cells.index:
                    row.append(Cell("–"))
                    continue
                c = cells.loc[(name, task)]
                row.append(Cell(_mean_ci(c["mean"], c["ci_half"]), _flag(c["rank"] == 1),
                                _flag(c["significant"])))
            rows.append(tuple(row))
        heads = tuple(f"{task} ({metric.split('/', 1)[-1]})" for task, metric in tasks)
        tables.append(Table(f"{model} · budget {budget} ×{scale:g}{_variant(variant)}",
                            ("target set", "LoRA rank", "# params", *heads), tuple(rows)))
    return tables


def table5_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 5 as numbers: a row per (model, budget, budget_scale, target_set) with
    <task>/mean and <task>/ci_half columns."""
    index = ["model", "budget", "budget_scale", "variant", "target_set"]
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
        ["model", "budget", "budget_scale", "variant", "_o"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def md_table(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = " ".join(c.text.split()).replace("|", "\\|")  # one line per table row
        return (f"**{text}**" if c.bold else text) + (f" {MARK}" if c.mark else "")

    align = [":---" if i < table.text_columns else "---:" for i in range(len(table.columns))]
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in str(text))


def tex_table(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = tex_escape(" ".join(c.text.split()))
        return (rf"\textbf{{{text}}}" if c.bold else text) + (r"$^\dagger$" if c.mark else "")

    spec = "".join("l" if i < table.text_columns else "r" for i in range(len(table.columns)))
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{tex_escape(table.title)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def html_table(table: Table) -> str:
    def cell(c: Cell, i: int) -> str:
        text = html.escape(c.text)
        text = f"<strong>{text}</strong>" if c.bold else text
        text = f"{text}<sup>{MARK}</sup>" if c.mark else text
        return f'<td class="txt">{text}</td>' if i < table.text_columns else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(cell(c, i) for i, c in enumerate(row)) + "</tr>"
                   for row in table.rows)
    return (f"<table><caption>{html.escape(table.title)}</caption><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>")


def plain_table(title: str, frame: pd.DataFrame) -> Table:
    rows = tuple(tuple(Cell("" if pd.isna(v) else str(v)) for v in r)
                 for r in frame.itertuples(index=False))
    return Table(title, tuple(map(str, frame.columns)), rows, text_columns=len(frame.columns))


# ---------------------------------------------------------------- report document
# A report is a list of blocks: ("h", level, text), ("p", text), ("list", items),
# ("table", Table), ("img", relative path, caption), ("code", text); rendered to md/html.


def _limited(frame: pd.DataFrame, title: str, csv_name: str) -> list[tuple]:
    blocks: list[tuple] = [("table", plain_table(title, frame.head(LIST_LIMIT)))]
    if len(frame) > LIST_LIMIT:
        blocks.append(("p", f"… and {len(frame) - LIST_LIMIT} more: see {csv_name}."))
    return blocks


def provenance(records: Sequence[dict[str, Any]], runs: pd.DataFrame) -> list[str]:
    found = ((r.get("provenance") or {}).get("versions") for r in records)
    versions = distinct(v for v in found if isinstance(v, dict))
    items = [f"package versions: {', '.join(f'{k} {v}' for k, v in sorted(v.items()))}"
             for v in versions]
    if len(versions) > 1:
        items.append("runs were made with different package versions (listed above)")
    for column, label in (("git_commit", "git commit"), ("device_name", "device"),
                          ("device", "device type"), ("hostname", "host")):
        values = sorted(runs[column].dropna().astype(str).unique())
        items.append(f"{label}: {', '.join(values) or 'not recorded'}")
    items.append(f"runs started {runs['started_at'].dropna().min()} and ended "
                 f"{runs['ended_at'].dropna().max()}")
    return items


def _overview(sweep_dir: Path, runs: pd.DataFrame, missing: pd.DataFrame,
              metrics: dict[str, str], baseline: str, confidence: float) -> list[str]:
    counts = runs["status"].value_counts()
    status = ", ".join(f"{counts.get(s, 0)} {s}"
                       for s in ("completed", "failed", "diverged", "corrupt"))
    return [
        f"sweep directory: {sweep_dir}",
        f"{len(runs)} run records: {status}; {len(missing)} cells of the expected grid missing",
        "metric: " + (", ".join(f"{t} → {m}" for t, m in metrics.items()) or "none yet"),
        f"baseline target set: {baseline}; intervals: {confidence:.0%} Student t over seeds; "
        f"tests: paired t and Wilcoxon signed-rank over shared seeds, Holm-adjusted within "
        f"each (model, task, budget, budget scale)",
        f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
    ]


def _result_blocks(summary: pd.DataFrame, figures: Iterable[Path], baseline: str,
                   confidence: float) -> list[tuple]:
    none_yet = [("p", "No completed runs with the metric yet.")]
    blocks: list[tuple] = [("h", 2, "Results in the layout of the LoRA paper's Table 5"),
                           ("p", legend(baseline, confidence))]
    blocks += [("table", t) for t in table5_tables(summary)] or none_yet
    blocks += [("h", 2, "Per-group summary")]
    blocks += [("table", t) for t in summary_tables(summary, baseline)] or none_yet
    blocks += [("h", 2, "Figures")]
    blocks += [("img", f"figures/{p.name}", CAPTIONS.get(p.stem.rstrip("_0123456789"), p.stem))
               for p in figures if p.suffix == ".png"] or none_yet
    return blocks


def _problem_blocks(runs: pd.DataFrame, missing: pd.DataFrame) -> list[tuple]:
    problems = runs.loc[runs["status"].ne("completed"), ["status", "run_id", "path", "error"]]
    blocks: list[tuple] = [("h", 2, f"Runs that did not complete ({len(problems)})")]
    blocks += (_limited(problems, "failed, diverged and corrupt runs", "runs.csv")
               if len(problems) else [("p", "None.")])
    blocks += [("h", 2, f"Missing cells ({len(missing)})")]
    blocks += (_limited(missing, "cells of the expected grid with no record", "missing.csv")
               if len(missing) else [("p", "None: every cell of the grid has a record.")])
    return blocks


def _config_blocks(records: Sequence[dict[str, Any]], runs: pd.DataFrame) -> list[tuple]:
    shared, varying = sweep_config(records)
    values = [f"{key}: {', '.join(seen[:12])}{' …' if len(seen) > 12 else ''}"
              for key, seen in varying.items()]
    return [("h", 2, "Sweep configuration"),
            ("p", "Keys that vary between runs (listed with their values) are left out below."),
            ("list", values), ("code", "\n".join(f"{k} = {v}" for k, v in shared.items())),
            ("h", 2, "Provenance"), ("list", provenance(records, runs))]


def report_blocks(sweep_dir: Path, loaded: list[LoadedRecord], runs: pd.DataFrame,
                  summary: pd.DataFrame, missing: pd.DataFrame, figures: Iterable[Path],
                  metrics: dict[str, str], baseline: str, confidence: float) -> list[tuple]:
    """The report as blocks, shared by report.md and report.html."""
    records = [loaded[i].record.to_dict() for i in runs.index[runs["status"].ne("corrupt")]]
    notes = [*runs.attrs.get("notes", []), *summary.attrs.get("notes", [])]
    return [
        ("h", 1, f"LoRA target-set ablation: {sweep_dir.name}"),
        ("list", _overview(sweep_dir, runs, missing, metrics, baseline, confidence)),
        *([("h", 2, "Notes"), ("list", notes)] if notes else []),
        *_result_blocks(summary, figures, baseline, confidence),
        *_problem_blocks(runs, missing),
        *_config_blocks(records, runs),
    ]


def render_md(blocks: list[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            out.append(md_table(args[0]))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})\n\n*{args[1]}*")
        elif kind == "code":
            out.append(f"```\n{args[0]}\n```")
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[tuple], folder: Path) -> str:
    out, title = [], "lora-ablate report"
    for kind, *args in blocks:
        if kind == "h":
            title = args[1] if args[0] == 1 else title
            out.append(f"<h{args[0]}>{html.escape(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "list":
            items = "".join(f"<li>{html.escape(str(item))}</li>" for item in args[0])
            out.append(f"<ul>{items}</ul>")
        elif kind == "table":
            out.append(html_table(args[0]))
        elif kind == "img":
            data = base64.b64encode((folder / args[0]).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" '
                       f'alt="{html.escape(args[1])}">'
                       f"<figcaption>{html.escape(args[1])}</figcaption></figure>")
        elif kind == "code":
            out.append(f"<pre>{html.escape(args[0], quote=False)}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(out) + "\n</body></html>\n")


# ---------------------------------------------------------------- entry points


def _load(sweep_dir: Path) -> list[LoadedRecord]:
    if not sweep_dir.is_dir():
        raise ConfigError(f"The sweep directory {sweep_dir} does not exist or is not a "
                          f"directory. Pass the folder a sweep writes its runs to "
                          f"(hydra.sweep.dir).")
    loaded = find_records(sweep_dir)
    if not loaded:
        raise ConfigError(f"There are no run records under {sweep_dir}: no result.json was "
                          f"found in it or below it. Runs write one when they end, so check "
                          f"the path, or wait until the first run of the sweep finishes.")
    return loaded


def _remove_stale(folder: Path, keep: Iterable[Path]) -> None:
    """Drop figures of an earlier report that this one did not redraw."""
    names = {p.name for p in keep}
    for path in [*folder.glob("*.png"), *folder.glob("*.svg")]:
        if path.name not in names:
            path.unlink(missing_ok=True)


def _comparison_metric(metric: str | None, per_task: dict[str, str]) -> str | dict[str, str]:
    """What summarize compares: one name when all tasks share it (one pass over the runs
    instead of one per task), else the per-task mapping."""
    if metric:
        return metric
    names = set(per_task.values())
    return per_task if len(names) > 1 else names.pop() if names else "test/accuracy"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while records are in memory: they are millions of
    acyclic JSON containers that every full collection would walk again (about a quarter of
    the time to load 10,000 records)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_report(sweep_dir: Path, *, baseline: str = "qv", metric: str | None = None,
                 confidence: float = 0.95) -> Path:
    """Aggregate every run record under `sweep_dir` into `sweep_dir/report/` and return it.
    `metric` None compares each task on its configured metric (test/<task.metric>)."""
    with _gc_paused():
        return _write_report(Path(sweep_dir), baseline, metric, confidence)


def _table_files(runs: pd.DataFrame, summary: pd.DataFrame, missing: pd.DataFrame,
                 baseline: str, confidence: float) -> dict[str, str]:
    summaries, table5 = summary_tables(summary, baseline), table5_tables(summary)
    return {
        "runs.csv": runs.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "table5.csv": table5_frame(summary).to_csv(index=False),
        "missing.csv": missing.to_csv(index=False),
        "summary.md": "\n".join([legend(baseline, confidence) + "\n",
                                 *map(md_table, table5), *map(md_table, summaries)]),
        "summary.tex": "% LaTeX tables; needs \\usepackage{booktabs}\n"
                       + "\n".join(map(tex_table, [*table5, *summaries])),
    }


def _write_report(sweep_dir: Path, baseline: str, metric: str | None, confidence: float) -> Path:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}.")
    loaded = _load(sweep_dir)
    runs = runs_frame(loaded, root=sweep_dir)
    check_baseline(runs, baseline)
    metrics = resolve_metrics(loaded, runs, metric)
    compare = _comparison_metric(metric, metrics)
    summary = summarize(runs, metric=compare, baseline=baseline, confidence=confidence,
                        loaded=loaded)
    missing = missing_cells(runs)
    out = sweep_dir / "report"
    curves = curves_frame(loaded, runs, compare)
    # Tables are written while worker processes draw the figures.
    with drawing_figures(summary, curves, out / "figures", baseline=baseline,
                         confidence=confidence) as drawn:
        for name, text in _table_files(runs, summary, missing, baseline, confidence).items():
            write_atomic(out / name, text)
        figures = drawn()
    _remove_stale(out / "figures", figures)
    blocks = report_blocks(sweep_dir, loaded, runs, summary, missing, figures, metrics,
                           baseline, confidence)
    write_atomic(out / "report.md", render_md(blocks))
    write_atomic(out / "report.html", render_html(blocks, out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lora-ablate-report",
        description="Aggregate the run records of a sweep into SWEEP_DIR/report/ "
                    "(CSV, Markdown and LaTeX tables, figures, report.md, report.html).")
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--baseline", default="qv",
                        help="target set every other one is compared with (default: qv)")
    parser.add_argument("--metric", default=None,
                        help="metric to compare, e.g. test/accuracy (default: each task's "
                             "configured metric)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence level of the intervals (default: 0.95)")
    args = parser.parse_args(argv)
    try:
        folder = write_report(args.sweep_dir, baseline=args.baseline, metric=args.metric,
                              confidence=args.confidence)
    except ConfigError as err:
        print(f"lora-ablate-report: error: {err}", file=sys.stderr)
        return 2
    print(folder)
    return 0
