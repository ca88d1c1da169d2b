"""Run records -> tidy tables and per-cell statistics for a sweep.

`record_frames` splits a sweep's records into the runs that count (one per (cell, seed):
the newest completed), the records they supersede and records outside the sweep's
manifest; `runs_frame` is the first of these. `summarize` makes one row per cell (model,
task, budget, budget_scale, layers, variant, target_set) comparing it with the group's
baseline target set (compare.py holds the statistics).
"""

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.labels import CELL, GROUP, LABEL_DEFAULTS, LABELS
from lora_ablate.records import CORRUPT, LoadedRecord, RunRecord, Status
from lora_ablate.report.compare import COLUMNS as COMPARE_COLUMNS
from lora_ablate.report.compare import Settings, compare_group
from lora_ablate.report.examples import correctness
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.stats import holm, t_half_width  # noqa: F401  (public re-exports)

# LABELS, GROUP (compared together) and CELL come from labels.Labels; the runs frame's
# `variant` is its text (e.g. train.lr=0.001), "" for none.
COST = ("train_seconds", "tokens_per_second", "peak_memory_bytes")
# Display order of the conventional target sets (the LoRA paper's Table 5 order first).
TARGET_ORDER = ("q", "k", "v", "o", "qk", "qv", "kv", "qkv", "qkvo", "ffn", "qkv_ffn", "all")
LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "mse", "mae")
NUMERIC = ("budget_scale", "lora_params", "head_params", "base_params", "budget_target",
           "budget_actual", "budget_deviation", *COST, "best_step")
RUN_COLUMNS = ("path", "run_id", "status", "collapsed", "still_improving", *LABELS, "targets", "lora_rank",
               "lora_params", "head_params", "base_params", "budget_target", "budget_actual",
               "budget_deviation", *COST, "device", "best_step", "git_commit", "device_name",
               "hostname", "started_at", "ended_at", "config_hash", "error")
SUMMARY_COLUMNS = (
    *CELL, "metric", "n", "n_pairs", "seeds_status", "problem_seeds", "improving_seeds",
    *[c for c in COMPARE_COLUMNS if c not in ("target_set", "n", "n_pairs")],
    "baseline_note", "lora_params", "lora_rank", *COST,
)
MANIFEST_NAME = "manifest.json"


# ---------------------------------------------------------------- runs frame


def _record_row(rec: RunRecord) -> dict[str, Any]:
    plan, cost, prov = rec.plan, rec.cost, rec.provenance
    row = {
        "run_id": rec.run_id, "status": rec.status.value, "collapsed": bool(rec.collapsed),
        "still_improving": None if rec.convergence is None else rec.convergence.still_improving,
        **rec.labels.row(),
        "targets": ",".join(plan.targets) or None,
        "lora_rank": plan.rank_text(),
        "lora_params": plan.lora_params, "head_params": plan.head_params, "base_params": plan.base_params,
        "budget_target": plan.budget.target, "budget_actual": plan.budget.actual,
        "budget_deviation": plan.budget.deviation,
        **{k: getattr(cost, k) for k in COST}, "device": cost.device,
        "best_step": (rec.best or {}).get("step"),
        "git_commit": prov.git_commit, "device_name": prov.device_name, "hostname": prov.hostname,
        "started_at": prov.started_at, "ended_at": prov.ended_at,
        "config_hash": rec.config_hash,
        "error": f"{rec.error.type}: {rec.error.message}".strip() if rec.error else None,
    }
    # Metric keys are split/name; anything else could clobber a fixed column. A NaN or
    # infinite value (a hand-edited or foreign record) is left out, so the run counts as
    # lacking that metric, and named in the row's error column.
    metrics = {k: v for k, v in rec.metrics.items() if "/" in k}
    nonfinite = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    row.update({k: v for k, v in metrics.items() if k not in nonfinite})
    if nonfinite:
        note = f"not finite, left out: {', '.join(f'{k}={metrics[k]}' for k in nonfinite)}"
        row["error"] = f"{row['error']}; {note}" if row["error"] else note
    return row


def _row(item: LoadedRecord, prefix: str) -> dict[str, Any]:
    path = str(item.path)
    path = path[len(prefix):] if prefix and path.startswith(prefix) else path
    if item.record is None:
        return {"path": path, "status": CORRUPT, "error": item.problem}
    try:
        return {"path": path, **_record_row(item.record)}
    except (AttributeError, TypeError, ValueError) as err:  # valid JSON, wrong shape
        return {"path": path, "status": CORRUPT, "error": f"malformed record ({err})"}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns (split/name), test/* first."""
    names = [c for c in frame.columns if "/" in c]
    return sorted(names, key=lambda c: (not c.startswith("test/"), c))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=[*RUN_COLUMNS, *metric_columns(frame)])
    for column in (*NUMERIC, *metric_columns(frame)):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["collapsed"] = frame["collapsed"].astype("boolean")
    frame["still_improving"] = frame["still_improving"].astype("boolean")
    return frame


@dataclass(frozen=True)
class Manifest:
    """SWEEP_DIR/manifest.json: the sweep's name and the run folders of its cells."""

    sweep_name: str | None
    created: str | None
    run_dirs: tuple[str, ...]
    config_hashes: dict[str, str] = field(default_factory=dict)  # run folder -> its cell's current config
    seed_plan: SeedPlan | None = None  # the adaptive-seeds design, when the sweep used one
    stages: dict[str, int] = field(default_factory=dict)  # run folder -> its stage (adaptive sweeps)


def read_manifest(sweep_dir: Path) -> Manifest | None:
    """The sweep's manifest, or None when it has none; ConfigError when it is unreadable."""
    path = Path(sweep_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        cells = data.get("cells") or []
        dirs = tuple(str(c["run_dir"]).strip("/") for c in cells)
        hashes = {str(c["run_dir"]).strip("/"): str(c["config_hash"]) for c in cells if c.get("config_hash")}
        stages = {str(c["run_dir"]).strip("/"): int(c["stage"]) for c in cells if c.get("stage")}
        plan = SeedPlan.from_json(data["adaptive"]) if data.get("adaptive") else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(
            f"The sweep manifest {path} cannot be read ({type(err).__name__}: {err}). It "
            f"should be JSON with a 'cells' list of objects that each name a 'run_dir' "
            f"relative to the sweep folder (and, for adaptive seeds, an 'adaptive' object with "
            f"stage1_seeds, max_seeds, alpha_stage1, continue_p and alpha); fix or remove it "
            f"to report every record found."
        ) from None
    return Manifest(data.get("sweep_name"), data.get("created"), dirs, hashes, plan, stages)


@dataclass
class RecordFrames:
    """A sweep's records split three ways (all with the runs frame's columns, indexed by
    position in the loaded list): `runs`, one per (cell, seed), the newest completed one
    (else the newest), plus corrupt files; `superseded`, older records of a (cell, seed)
    that `runs` holds; `other`, records outside the manifest's run folders."""

    runs: pd.DataFrame
    superseded: pd.DataFrame
    other: pd.DataFrame
    manifest: Manifest | None = None
    notes: list[str] = field(default_factory=list)


def _in_manifest(paths: pd.Series, manifest: Manifest) -> pd.Series:
    prefixes = tuple(f"{d}/" for d in manifest.run_dirs if d)
    return paths.astype(str).str.startswith(prefixes) if prefixes else paths.map(lambda _: False)


def _current(frame: pd.DataFrame, manifest: Manifest | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per (cell, seed): a record of the cell's current config (the manifest's
    hash for its run folder) beats the others, then a completed one, then the newest."""
    real = frame["status"].ne(CORRUPT)
    hashes = manifest.config_hashes if manifest is not None else {}
    current = frame["path"].astype(str).str.rpartition("/")[0].map(hashes).eq(frame["config_hash"])
    order = frame[real].assign(
        _current=current[real], _done=frame["status"].eq(Status.completed),
        _end=frame["ended_at"].fillna("").astype(str)
    ).sort_values(["_current", "_done", "_end", "path"])
    keep = order.drop_duplicates(list(LABELS), keep="last").index.union(frame.index[~real])
    return frame.loc[frame.index.isin(keep)], frame.loc[~frame.index.isin(keep)]


def record_frames(loaded: list[LoadedRecord], *, root: Any = None,
                  manifest: Manifest | None = None) -> RecordFrames:
    """Split `loaded` (find_records of a sweep folder) into runs, superseded and other
    records. With `root`, paths are relative to it, and root/manifest.json (when there is
    one and `manifest` is not given) decides which records are the sweep's."""
    prefix = str(root).rstrip("/") + "/" if root else ""  # string slicing: 10x Path.relative_to
    frame = _typed(pd.DataFrame([_row(item, prefix) for item in loaded] or [{}]).iloc[
        : len(loaded)])
    if manifest is None and root is not None:
        manifest = read_manifest(Path(root))
    notes = []
    if manifest is not None:
        inside = _in_manifest(frame["path"], manifest)
        other, frame = frame[~inside], frame[inside]
        if len(other):
            notes.append(f"{len(other)} records below the sweep folder are not in its "
                         f"manifest ({manifest.sweep_name or MANIFEST_NAME}); they are listed "
                         f"as other runs and left out of the statistics")
    else:
        other = frame.iloc[:0]
    runs, superseded = _current(frame, manifest)
    if len(superseded):
        notes.append(f"{len(superseded)} older records of a (cell, seed) that has a newer "
                     f"or completed one are superseded and left out of the statistics")
    runs.attrs["notes"] = list(notes)
    return RecordFrames(runs, superseded, other, manifest, notes)


def runs_frame(loaded: list[LoadedRecord], *, root: Any = None,
               manifest: Manifest | None = None) -> pd.DataFrame:
    """One row per current record (index = position in `loaded`), corrupt ones included
    with status CORRUPT; superseded records and records outside the manifest are left
    out and counted in `frame.attrs["notes"]` (record_frames returns them)."""
    return record_frames(loaded, root=root, manifest=manifest).runs


# ---------------------------------------------------------------- statistics


def is_higher_better(metric: str) -> bool:
    """Guess the direction of a metric from its name (losses and errors: lower is better)."""
    name = metric.rsplit("/", 1)[-1].lower()
    return not any(part in name for part in LOWER_IS_BETTER)


def target_order(target_sets: pd.Series) -> pd.Series:
    """Sort key: conventional target sets in TARGET_ORDER, then others alphabetically."""
    known = {name: i for i, name in enumerate(TARGET_ORDER)}
    unknown = sorted(set(target_sets.dropna()) - set(known))
    others = {name: len(known) + i for i, name in enumerate(unknown)}
    return target_sets.map(lambda name: known.get(name, others.get(name, 10**6)))


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


def group_label(key: Sequence[Any], names: Sequence[str] = GROUP) -> str:
    return ", ".join(f"{name}={value}" for name, value in zip(names, key)
                     if not (name in LABEL_DEFAULTS and value in (LABEL_DEFAULTS[name], None)))


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


def _seed_status(runs: pd.DataFrame, outcomes: pd.Series) -> pd.DataFrame:
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


def _baseline_of(group: pd.DataFrame, baseline: str) -> str:
    if group["target_set"].eq(baseline).any():
        return baseline
    names = group["target_set"].drop_duplicates()
    return str(names.iloc[target_order(names).argsort(kind="stable")].iloc[0])


def _baseline_notes(key: Sequence[Any], group: pd.DataFrame, wanted: str,
                    chosen: str) -> list[str]:
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


def _usable(runs: pd.DataFrame, metric: str, outcomes: pd.Series) -> tuple[pd.DataFrame, list[str]]:
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


def _cell_info(done: pd.DataFrame) -> pd.DataFrame:
    cells = done.groupby(list(CELL), dropna=False, sort=False)
    info = cells.agg(lora_params=("lora_params", "median"), **{k: (k, "mean") for k in COST})
    info["lora_rank"] = cells["lora_rank"].agg(lambda s: "/".join(sorted(set(s.dropna()))))
    return info.reset_index()


def _correctness_notes(problems: dict[int, str], labels: dict[int, int],
                       done: pd.DataFrame, split: str) -> list[str]:
    notes = []
    if problems:
        reasons = pd.Series(problems).value_counts()
        notes.append(f"{len(problems)} runs have no usable {split} predictions ("
                     + "; ".join(f"{n}: {why}" for why, n in reasons.head(3).items())
                     + "); their comparisons use the t-interval over seeds only")
    ids = pd.Series(labels, dtype="int64")
    for task, index in done.groupby("task").groups.items():
        kinds = ids.reindex(index).dropna().nunique()
        if kinds > 1:
            notes.append(f"the {split} labels differ between runs of task {task} ({kinds} "
                         f"different label vectors), so runs with different labels are not "
                         f"paired example by example")
    return notes


def compare_frame(done: pd.DataFrame, metric: str, baseline: str, settings: Settings,
                  loaded: Sequence[LoadedRecord] | None,
                  group: Sequence[str] = GROUP) -> tuple[pd.DataFrame, list[str]]:
    """compare_group over every group of `done` (usable runs, one per (cell, seed)), the
    baseline falling back per group; rows keyed by the group columns and target_set."""
    notes: list[str] = []
    correct = None
    if loaded is not None and metric.startswith("test/") and metric.endswith("/accuracy"):
        correct = correctness(loaded, done.index, split="test", metric=metric)
        notes += _correctness_notes(correct.problems, correct.labels, done, "test")
    values = done.assign(value=done[metric], run=done.index)
    parts = []
    for key, rows in values.groupby(list(group), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        chosen = _baseline_of(rows, baseline)
        group_notes = _baseline_notes(key, rows, baseline, chosen)
        notes += group_notes
        table = compare_group(rows[["target_set", "seed", "value", "run"]], chosen, correct,
                              settings)
        parts.append(table.assign(**dict(zip(group, key)), baseline_note=" ".join(group_notes)))
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), notes


def _summarize_metric(runs: pd.DataFrame, metric: str, baseline: str, settings: Settings,
                      loaded: Sequence[LoadedRecord] | None) -> tuple[pd.DataFrame, list[str]]:
    outcomes = outcome(runs[runs["status"].ne(CORRUPT)], metric)
    done, notes = _usable(runs[runs["status"].ne(CORRUPT)], metric, outcomes)
    if done.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), notes
    table, more = compare_frame(done, metric, baseline, settings, loaded)
    table = table.merge(_cell_info(done), on=list(CELL), how="left").merge(
        _seed_status(runs, outcomes), on=list(CELL), how="left")
    return table.assign(metric=metric), notes + more


def summarize(runs: pd.DataFrame, *, metric: str | Mapping[str, str] = "test/accuracy",
              baseline: str = "qv", confidence: float = 0.95,
              higher_is_better: bool | None = None, alpha: float = 0.05,
              loaded: Sequence[LoadedRecord] | None = None,
              effect: float = 0.01, seed_plan: SeedPlan | None = None) -> pd.DataFrame:
    """One row per cell (SUMMARY_COLUMNS): n, the status of its seeds, the mean over the
    seeds it shares with its group's baseline (the unpaired mean beside it) with a
    t-interval over seeds, and the paired difference to the baseline decided by the family
    procedure (family.py): t p Holm-adjusted over every non-baseline target set of the
    group, "resolved", and the interval at the level of its Holm step (its SE holds the
    set × example term when `loaded` gives per-example predictions of an accuracy metric;
    `diff_ci_covers` says so), with the plain per-comparison interval beside it; sign-flip
    and Wilcoxon p, McNemar per seed by direction, and family-level planning (MDE, seeds
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
        settings = Settings(confidence=confidence, alpha=alpha, higher_is_better=better,
                            effect=effect, seed_plan=seed_plan)
        table, part_notes = _summarize_metric(subset, name, baseline, settings, loaded)
        parts.append(table)
        notes += part_notes
    return _ordered(parts, SUMMARY_COLUMNS, notes)


def _ordered(parts: list[pd.DataFrame], columns: Sequence[str], notes: list[str],
             group: Sequence[str] = GROUP) -> pd.DataFrame:
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


# ---------------------------------------------------------------- sweep shape


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells of the expected grid that have no record (of any status): within each
    (model, budget), the full product of the observed tasks, target sets, budget scales,
    layers, variants and seeds. Corrupt records carry no labels, so they fill no cell."""
    dims = [name for name in LABELS if name not in ("model", "budget")]
    seen = runs[runs["status"].ne(CORRUPT)]
    parts = []
    for (model, budget), rows in seen.groupby(["model", "budget"], dropna=False, sort=True):
        grid = pd.MultiIndex.from_product(
            [sorted(rows[d].dropna().unique()) for d in dims], names=dims)
        absent = grid.difference(pd.MultiIndex.from_frame(rows[dims])).to_frame(index=False)
        parts.append(absent.assign(model=model, budget=budget))
    columns = ["model", "budget", *dims]
    if not any(len(p) for p in parts):
        return pd.DataFrame(columns=columns)
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)[columns]
    out["seed"] = out["seed"].astype("Int64")
    out = out.assign(_order=target_order(out["target_set"])).sort_values(
        ["model", "budget", *(d for d in dims if d not in ("target_set", "seed")), "_order", "seed"],
        kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order; nested ones are keyed by repr (records are
    written with sorted keys), which is much faster than json.dumps on 10,000 records."""
    seen: dict[Any, Any] = {}
    for value in values:
        key = repr(value) if isinstance(value, (dict, list)) else value
        seen.setdefault(key, value)
    return list(seen.values())


def _numbers_first(text: str) -> tuple[int, float, str]:
    """Sort key for JSON values: numbers by value (seed 2 before 10), then the rest."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def sweep_config(records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The shared config of the sweep (first record's, without what varies between runs)
    and, for each varying key, its distinct values."""
    configs = [c for r in records if isinstance(c := r.get("config"), dict)]
    first = configs[0] if configs else {}
    # Compare whole sections first (cheap dict equality); flatten only distinct variants.
    sections = {k for cfg in configs for k in cfg if cfg.get(k) != first.get(k)}
    variants: dict[str, set[str]] = {}
    for section in sections | ({"seed"} & first.keys()):
        for value in distinct(cfg.get(section) for cfg in configs):
            for key, text in _flatten({section: value}).items():
                variants.setdefault(key, set()).add(text)
    varying = {k: sorted(v, key=_numbers_first) for k, v in sorted(variants.items())
               if len(v) > 1 or k == "seed"}
    shared = {k: v for k, v in _flatten(first).items() if k not in varying}
    return shared, varying


def _configured_metric(loaded: list[LoadedRecord], index: pd.Index) -> str | None:
    for i in index:
        record = loaded[i].record
        task = (record.config.get("task") if record else None) or {}
        name = task.get("metric") if isinstance(task, dict) else None
        if name:
            return name if name.startswith("test/") else f"test/{name}"
    return None


def resolve_metrics(loaded: list[LoadedRecord], runs: pd.DataFrame,
                    metric: str | None = None) -> dict[str, str]:
    """The metric to compare per task: `metric` when given, else the task's configured
    metric (`config.task.metric` as test/<name>), falling back to the first test/* metric
    that the task's completed runs recorded."""
    tasks = sorted(runs["task"].dropna().unique())
    if metric is not None:
        return dict.fromkeys(tasks, metric)
    tests = [c for c in metric_columns(runs) if c.startswith("test/")]
    out = {}
    for task in tasks:
        rows = runs[runs["task"].eq(task)]
        done = rows[rows["status"].eq(Status.completed)]
        recorded = [c for c in tests if done[c].notna().any()]
        configured = _configured_metric(loaded, done.index[:1].append(rows.index[:1]))
        if configured in recorded or not recorded:
            out[task] = configured or "test/accuracy"
        else:
            out[task] = recorded[0]
    return out


def curves_frame(loaded: list[LoadedRecord], runs: pd.DataFrame,
                 metric: str | Mapping[str, str]) -> pd.DataFrame:
    """Validation curves per cell: mean, std and count over seeds of val/<name> at each
    step of the completed runs' history, where test/<name> is the compared metric."""
    done = runs[runs["status"].eq(Status.completed)]
    index, steps, values = [], [], []
    for i, task in zip(done.index, done["task"]):
        name = metric.get(task) if isinstance(metric, Mapping) else metric
        if not name:
            continue
        key = "val/" + name.split("/", 1)[-1]
        for point in (loaded[i].record.history if loaded[i].record else ()):
            value, step = point.get(key), point.get("step")
            if value is not None and step is not None:
                index.append(i)
                steps.append(step)
                values.append(value)
    points = pd.DataFrame({"step": steps, "value": values}, index=pd.Index(index, dtype="int64"))
    points = points.join(done[list(CELL)])
    curves = points.groupby([*CELL, "step"], dropna=False, sort=True)["value"].agg(
        ["mean", "std", "count"]).reset_index()
    return curves
