"""Run records -> tidy tables and per-cell statistics for a sweep.

`runs_frame` makes one row per record file; `summarize` makes one row per
(model, task, budget, budget_scale, target_set) with a t-interval and paired tests
against a baseline target set over the seeds both have.
"""

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lora_ablate.errors import ConfigError
from lora_ablate.records import LoadedRecord

# `variant`: the other overrides that set a run apart (e.g. train.lr=0.001), "" for none.
LABELS = ("model", "task", "target_set", "budget", "budget_scale", "variant", "seed")
GROUP = ("model", "task", "budget", "budget_scale", "variant")  # cells compared with each other
CELL = (*GROUP, "target_set")
COST = ("train_seconds", "tokens_per_second", "peak_memory_bytes")
# Display order of the conventional target sets (the LoRA paper's Table 5 order first).
TARGET_ORDER = ("q", "k", "v", "o", "qk", "qv", "kv", "qkv", "qkvo", "ffn", "qkv_ffn", "all")
LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "mse", "mae")
NUMERIC = ("budget_scale", "lora_params", "head_params", "base_params", "budget_target",
           "budget_actual", "budget_deviation", *COST, "best_step")
SUMMARY_COLUMNS = (
    *CELL, "metric", "n", "mean", "std", "ci_low", "ci_high", "ci_half", "rank",
    "baseline", "n_pairs", "diff", "diff_ci_low", "diff_ci_high", "p_ttest", "p_wilcoxon",
    "p_ttest_holm", "p_wilcoxon_holm", "significant", "lora_params", "lora_rank", *COST,
)


# ---------------------------------------------------------------- runs frame


def rank_string(modules: Sequence[Mapping[str, Any]] | None) -> str | None:
    """Distinct LoRA ranks of a plan for display: "8", or "4–5" when they differ."""
    try:  # the C-level map is the fast path for 10,000 plans of up to ~100 modules
        ranks = set(map(itemgetter("rank"), modules or ()))
    except (KeyError, TypeError):
        ranks = {m.get("rank") for m in modules or () if isinstance(m, Mapping)}
    ranks.discard(None)
    if not ranks:
        return None
    low, high = int(min(ranks)), int(max(ranks))
    return str(low) if low == high else f"{low}–{high}"


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, Mapping):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    return str(error)


def _labels(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's labels, falling back to the resolved config for any that are absent."""
    labels = record.get("labels") or {}
    if len(labels.keys() & LABELS) == len(LABELS):
        return {k: labels[k] for k in LABELS}
    cfg = record.get("config") or {}
    fallback = {
        "model": (cfg.get("model") or {}).get("name"),
        "task": (cfg.get("task") or {}).get("name"),
        "target_set": "+".join((cfg.get("targets") or {}).get("matrices") or []) or None,
        "budget": (cfg.get("budget") or {}).get("kind"),
        "budget_scale": (cfg.get("budget") or {}).get("scale"),
        "seed": cfg.get("seed"),
        "variant": "",
    }
    return {k: labels.get(k, fallback[k]) for k in LABELS}


def _row(item: LoadedRecord, prefix: str) -> dict[str, Any]:
    path = str(item.path)
    path = path[len(prefix):] if prefix and path.startswith(prefix) else path
    if item.record is None:
        return {"path": path, "status": "corrupt", "error": item.problem}
    try:
        return {"path": path, **_record_row(item.record.to_dict())}
    except (AttributeError, TypeError, ValueError) as err:  # valid JSON, wrong shape
        return {"path": path, "status": "corrupt", "error": f"malformed record ({err})"}


def _record_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    plan, cost = rec.get("plan") or {}, rec.get("cost") or {}
    budget, prov = plan.get("budget") or {}, rec.get("provenance") or {}
    row = {
        "run_id": rec.get("run_id"), "status": rec["status"], **_labels(rec),
        "targets": ",".join(plan.get("targets") or []) or None,
        "lora_rank": rank_string(plan.get("modules")),
        **{k: plan.get(k) for k in ("lora_params", "head_params", "base_params")},
        **{f"budget_{k}": budget.get(k) for k in ("target", "actual", "deviation")},
        **{k: cost.get(k) for k in COST}, "device": cost.get("device"),
        "best_step": (rec.get("best") or {}).get("step"),
        **{k: prov.get(k) for k in ("git_commit", "device_name", "hostname", "started_at",
                                    "ended_at")},
        "config_hash": rec.get("config_hash"), "error": _error_text(rec.get("error")),
    }
    # Metric keys are split/name; anything else could clobber a fixed column.
    row.update({k: v for k, v in (rec.get("metrics") or {}).items() if "/" in k})
    return row


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns (split/name), test/* first."""
    names = [c for c in frame.columns if "/" in c]
    return sorted(names, key=lambda c: (not c.startswith("test/"), c))


def _newest_first_notes(frame: pd.DataFrame, keep: pd.Index) -> list[str]:
    notes = []
    real = frame["status"].ne("corrupt")
    dups = frame[real & frame.duplicated(["run_id", *LABELS], keep=False)]
    for run_id, rows in dups.groupby("run_id", sort=True):
        kept = rows[rows.index.isin(keep)].iloc[0]
        notes.append(
            f"run_id {run_id!r} has {len(rows)} records; kept {kept.path} ({kept.status}, "
            f"ended {kept.ended_at}), ignored {', '.join(rows.path[rows.path != kept.path])}"
        )
    return notes


def _drop_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one row per recorded cell: a completed run beats a failed one, then newest."""
    real = frame["status"].ne("corrupt")
    if not frame[real].duplicated(["run_id", *LABELS]).any():
        return frame, []
    order = frame[real].assign(
        _done=frame["status"].eq("completed"), _end=frame["ended_at"].fillna("").astype(str)
    ).sort_values(["_done", "_end", "path"])
    keep = order.drop_duplicates(["run_id", *LABELS], keep="last").index
    keep = keep.union(frame.index[~real])
    return frame.loc[frame.index.isin(keep)], _newest_first_notes(frame, keep)


def runs_frame(loaded: list[LoadedRecord], *, root: Any = None) -> pd.DataFrame:
    """One row per record file (index = position in `loaded`), corrupt ones included with
    status "corrupt". Duplicate run_ids keep the newest completed record; what was dropped
    is explained in `frame.attrs["notes"]`. With `root`, paths are relative to it."""
    fixed = ["path", "run_id", "status", *LABELS, "targets", "lora_rank", "lora_params",
             "head_params", "base_params", "budget_target", "budget_actual",
             "budget_deviation", *COST, "device", "best_step", "git_commit", "device_name",
             "hostname", "started_at", "ended_at", "config_hash", "error"]
    prefix = str(root).rstrip("/") + "/" if root else ""  # string slicing: 10x Path.relative_to
    frame = pd.DataFrame([_row(item, prefix) for item in loaded])
    frame = frame.reindex(columns=[*fixed, *metric_columns(frame)])
    for column in (*NUMERIC, *metric_columns(frame)):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame, notes = _drop_duplicates(frame)
    frame.attrs["notes"] = notes
    return frame


# ---------------------------------------------------------------- statistics


def is_higher_better(metric: str) -> bool:
    """Guess the direction of a metric from its name (losses and errors: lower is better)."""
    name = metric.rsplit("/", 1)[-1].lower()
    return not any(part in name for part in LOWER_IS_BETTER)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN entries are not comparisons and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[ok][order]))
        ranked = np.empty(m)
        ranked[order] = adjusted
        out[ok] = ranked
    return out


def t_half_width(std: Any, n: Any, confidence: float) -> Any:
    """Half-width of the Student-t interval of a mean; NaN for n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf((1 + confidence) / 2, np.where(n >= 2, n - 1, np.nan))
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def paired_tests(diffs: np.ndarray, confidence: float) -> dict[str, float]:
    """Mean paired difference, its t-interval, paired t and Wilcoxon signed-rank p-values.
    Tests are undefined (NaN) for fewer than 2 pairs or when every difference is zero."""
    n = len(diffs)
    mean = float(diffs.mean()) if n else math.nan
    out = {"n_pairs": n, "diff": mean, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
           "p_ttest": math.nan, "p_wilcoxon": math.nan}
    if n < 2:
        return out
    half = float(t_half_width(diffs.std(ddof=1), n, confidence))
    out.update(diff_ci_low=mean - half, diff_ci_high=mean + half)
    if not np.any(diffs):
        return out
    with warnings.catch_warnings():  # near-constant differences warn; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        out["p_ttest"] = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        try:
            out["p_wilcoxon"] = float(stats.wilcoxon(diffs).pvalue)
        except ValueError:  # e.g. too few non-zero differences
            pass
    return out


def target_order(target_sets: pd.Series) -> pd.Series:
    """Sort key: conventional target sets in TARGET_ORDER, then others alphabetically."""
    known = {name: i for i, name in enumerate(TARGET_ORDER)}
    unknown = sorted(set(target_sets.dropna()) - set(known))
    others = {name: len(known) + i for i, name in enumerate(unknown)}
    return target_sets.map(lambda name: known.get(name, others.get(name, 10**6)))


def check_baseline(runs: pd.DataFrame, baseline: str) -> None:
    present = runs.loc[runs["status"].ne("corrupt"), "target_set"].dropna().drop_duplicates()
    if len(present) and baseline not in set(present):
        names = ", ".join(present.iloc[target_order(present).argsort(kind="stable")])
        raise ConfigError(
            f"The baseline target set {baseline!r} does not occur in this sweep, so there is "
            f"nothing to compare against. Target sets present: {names}. Pass one of them "
            f"with --baseline (or report.baseline=... on the lora-ablate command line)."
        )


def _completed(runs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Completed runs that have the metric, one per (cell, seed): the newest wins."""
    done = runs[runs["status"].eq("completed")]
    if len(done) and (metric not in runs or done[metric].isna().all()):
        present = ", ".join(metric_columns(done.dropna(axis=1, how="all"))) or "none"
        raise ConfigError(
            f"No completed run in this sweep recorded the metric {metric!r}. Metrics "
            f"present: {present}. Choose one with --metric (e.g. --metric test/accuracy)."
        )
    notes = []
    if len(done) and done[metric].isna().any():
        notes.append(f"{int(done[metric].isna().sum())} completed runs lack {metric} and "
                     f"are left out of its statistics")
    done = done[done[metric].notna()] if len(done) else done
    ordered = done.assign(_end=done["ended_at"].fillna("").astype(str)).sort_values("_end")
    unique = ordered.drop_duplicates([*CELL, "seed"], keep="last")
    if len(unique) < len(done):
        notes.append(f"{len(done) - len(unique)} completed runs repeat a (cell, seed) under "
                     f"another run_id; only the newest of each enters the statistics")
    return unique.drop(columns="_end"), notes


def _paired(done: pd.DataFrame, metric: str, baseline: str, confidence: float) -> pd.DataFrame:
    seeded = done[done["seed"].notna()]
    base = seeded.loc[seeded["target_set"].eq(baseline), [*GROUP, "seed", metric]]
    pairs = seeded[[*CELL, "seed", metric]].merge(
        base.rename(columns={metric: "_base"}), on=[*GROUP, "seed"], how="inner")
    diffs = (pairs[metric] - pairs["_base"]).to_numpy()
    rows = [
        {**dict(zip(CELL, key)), **paired_tests(diffs[idx], confidence)}
        for key, idx in pairs.groupby(list(CELL), dropna=False, sort=False).indices.items()
    ]
    columns = [*CELL, "n_pairs", "diff", "diff_ci_low", "diff_ci_high", "p_ttest", "p_wilcoxon"]
    return pd.DataFrame(rows, columns=columns)


def _cell_stats(done: pd.DataFrame, metric: str, confidence: float) -> pd.DataFrame:
    cells = done.groupby(list(CELL), dropna=False, sort=False)
    table = cells.agg(
        n=(metric, "size"), mean=(metric, "mean"), std=(metric, "std"),
        lora_params=("lora_params", "median"),
        **{k: (k, "mean") for k in COST},
    )
    table["lora_rank"] = cells["lora_rank"].agg(lambda s: "/".join(sorted(set(s.dropna()))))
    table = table.reset_index()
    table["ci_half"] = t_half_width(table["std"], table["n"], confidence)
    table["ci_low"] = table["mean"] - table["ci_half"]
    table["ci_high"] = table["mean"] + table["ci_half"]
    return table


def _group_label(key: Sequence[Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in zip(GROUP, key))


def _summarize_metric(runs: pd.DataFrame, metric: str, baseline: str, confidence: float,
                      better_high: bool, alpha: float) -> tuple[pd.DataFrame, list[str]]:
    done, notes = _completed(runs, metric)
    if done.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), notes
    table = _cell_stats(done, metric, confidence).merge(
        _paired(done, metric, baseline, confidence), on=list(CELL), how="left")
    by_group = table.assign(_is_base=table["target_set"].eq(baseline)).groupby(
        list(GROUP), dropna=False, sort=False)
    has_base = by_group["_is_base"].transform("any")
    table.loc[has_base & table["n_pairs"].isna(), "n_pairs"] = 0
    for column in ("p_ttest", "p_wilcoxon"):
        table[f"{column}_holm"] = by_group[column].transform(holm)
    table["significant"] = (table["p_ttest_holm"] < alpha).astype("boolean")
    table.loc[~has_base, "significant"] = pd.NA
    table["rank"] = by_group["mean"].rank(ascending=not better_high, method="min")
    table["baseline"] = baseline
    table["metric"] = metric
    for key in table.loc[~has_base, list(GROUP)].drop_duplicates().itertuples(index=False):
        notes.append(f"baseline {baseline!r} has no completed runs in {_group_label(key)}; "
                     f"its difference columns are left empty")
    return table, notes


def summarize(runs: pd.DataFrame, *, metric: str | Mapping[str, str] = "test/accuracy",
              baseline: str = "qv", confidence: float = 0.95,
              higher_is_better: bool | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Per (model, task, budget, budget_scale, target_set): n, mean, std, t-interval, mean
    paired difference to `baseline` over shared seeds with paired t / Wilcoxon p-values,
    Holm-adjusted within each (model, task, budget, budget_scale), and the rank by mean.

    `metric` may map task -> metric when tasks are scored differently; `higher_is_better`
    None guesses from the metric name. Notes (dropped rows, absent baselines) are in
    `attrs["notes"]`."""
    check_baseline(runs, baseline)
    per_task = metric.items() if isinstance(metric, Mapping) else [(None, metric)]
    parts, notes = [], []
    for task, name in per_task:
        subset = runs if task is None else runs[runs["task"].eq(task)]
        better = is_higher_better(name) if higher_is_better is None else higher_is_better
        table, part_notes = _summarize_metric(subset, name, baseline, confidence, better, alpha)
        parts.append(table)
        notes += part_notes
    empty = pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    summary = pd.concat([p for p in parts if len(p)] or [empty], ignore_index=True)
    summary = summary.assign(_order=target_order(summary["target_set"])).sort_values(
        [*GROUP, "_order", "target_set"], na_position="last", kind="stable")
    summary = summary.reindex(columns=list(SUMMARY_COLUMNS)).reset_index(drop=True)
    summary["n_pairs"] = summary["n_pairs"].astype("Int64")
    summary["n"] = summary["n"].astype("Int64")
    summary["rank"] = summary["rank"].astype("Int64")
    summary["significant"] = summary["significant"].astype("boolean")
    summary.attrs["notes"] = notes
    return summary


# ---------------------------------------------------------------- sweep shape


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells of the expected grid that have no record (of any status): within each
    (model, budget), the full product of the observed tasks, target sets, budget scales and
    seeds. Corrupt records carry no labels, so they fill no cell."""
    dims = ["task", "target_set", "budget_scale", "variant", "seed"]
    seen = runs[runs["status"].ne("corrupt")]
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
        ["model", "budget", "task", "budget_scale", "variant", "_order", "seed"], kind="stable")
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
        record = loaded[i].record.to_dict() if loaded[i].record else {}
        name = ((record.get("config") or {}).get("task") or {}).get("metric")
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
        done = rows[rows["status"].eq("completed")]
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
    done = runs[runs["status"].eq("completed")]
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
