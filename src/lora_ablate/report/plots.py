"""Figures of a sweep: each builder returns matplotlib Figures (nothing is written or
shown); `write_figures` saves them as PNG and SVG for the report. Panels, colours and
saving come from figure_base, shared with the analysis figures. A figure whose data is
missing is skipped (an empty list), not failed.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lora_ablate.records import Status
from lora_ablate.report.figure_base import (BASELINE_COLOR, PANELS_PER_FIGURE, group_keys,
                                            groups, message_figure, ordered, panel_title,
                                            save, set_color, small_multiples)
from lora_ablate.report.metrics import axis_label, better_way, is_higher_better
from lora_ablate.report.stats import t_half_width
from lora_ablate.report.tables import interval_columns

__all__ = ["CAPTIONS", "budget_figures", "cost_figures", "curve_figures", "depth_figures",
           "difference_figures", "heatmap_figures", "means_figures", "message_figure",
           "pareto_front", "report_figures", "save", "write_figures"]
BANDS = ("bottom", "middle", "top", "all")  # targets.layers bands, in depth order


# ---------------------------------------------------------------- the figures


def _seed_values(runs: pd.DataFrame | None, key: Mapping[str, Any], metric: str) -> pd.DataFrame:
    """Completed runs of one group with the compared metric: target_set and value."""
    if runs is None or runs.empty or metric not in runs:
        return pd.DataFrame(columns=["target_set", "value"])
    mask = runs["status"].eq(Status.completed) & runs[metric].notna()
    for name, value in key.items():
        if name in runs:
            mask &= runs[name].isna() if pd.isna(value) else runs[name].eq(value)
    return runs.loc[mask, ["target_set", metric]].rename(columns={metric: "value"})


def means_figures(summary: pd.DataFrame, runs: pd.DataFrame | None = None, *,
                  baseline: str = "qv", confidence: float = 0.95,
                  per_figure: int | None = PANELS_PER_FIGURE) -> list[Figure]:
    """Per group: every seed's value as a dot, over it the mean with its t-interval over
    seeds, in the set's colour; a cell with one seed has no bar and is labelled
    n=1. A dashed black line at the baseline's mean."""
    if summary.empty:
        return []
    rng = np.random.default_rng(0)  # the dots' sideways jitter, the same on every redraw

    def draw(ax: Axes, key: Mapping[str, Any], rows: pd.DataFrame) -> None:
        x = np.arange(len(rows))
        where = dict(zip(rows["target_set"], x))
        seeds = _seed_values(runs, key, rows["metric"].iloc[0])
        seeds = seeds[seeds["target_set"].isin(where)]
        ax.scatter(seeds["target_set"].map(where) + rng.uniform(-0.12, 0.12, len(seeds)),
                   seeds["value"], s=10, color="0.6", zorder=2, label="one seed")
        n = pd.to_numeric(rows["n"], errors="coerce").fillna(0).to_numpy()
        half = rows["ci_half"].to_numpy(dtype=float)
        is_base = rows["target_set"].eq(baseline).to_numpy()
        means = rows["mean"].to_numpy(dtype=float)
        for xi, name in zip(x, rows["target_set"]):  # each set in its own colour
            if n[xi] >= 2:
                ax.errorbar(xi, means[xi], yerr=np.nan_to_num(half[xi]), fmt="o",
                            color=set_color(name), capsize=3, zorder=3)
            else:
                ax.plot(xi, means[xi], "o", mfc="white", color=set_color(name), zorder=3)
        for xi in x[n < 2]:
            ax.annotate("n=1", (xi, means[xi]), textcoords="offset points", xytext=(5, -3),
                        fontsize=7)
        marked = rows["significant"].fillna(False).to_numpy(dtype=bool) \
            if "significant" in rows else np.zeros(len(rows), bool)
        tops = np.where(np.isnan(half), means, means + np.nan_to_num(half))
        for xi in x[marked]:
            ax.annotate("†", (xi, tops[xi]), ha="center", va="bottom", fontsize=11)
        if is_base.any():
            ax.axhline(means[is_base][0], color=BASELINE_COLOR, ls="--", lw=0.8,
                       label=f"baseline {baseline}")
        ax.legend(fontsize=7, loc="best")
        ax.set_xticks(x, [f"{t}\nn={int(k)}" for t, k in zip(rows["target_set"], n)],
                      rotation=45, ha="right", fontsize=8)
        ax.set(title=panel_title(key), ylabel=axis_label(rows["metric"].iloc[0]))
        ax.grid(axis="y", alpha=0.3)

    title = (f"Seeds (dots) and mean with {confidence:.0%} t-interval over seeds "
             f"(† differs from {baseline}, Holm-adjusted)")
    return small_multiples(groups(summary), title, draw, per_figure=per_figure)


def difference_figures(summary: pd.DataFrame, *, baseline: str = "qv",
                       confidence: float = 0.95,
                       per_figure: int | None = PANELS_PER_FIGURE) -> list[Figure]:
    """Difference to the baseline per target set with the family procedure's interval (at
    the level of its Holm step, so it excludes 0 exactly when the row is resolved)."""
    if summary.empty or "diff" not in summary:
        return []
    rows = summary[summary["target_set"].ne(baseline) & summary["diff"].notna()]
    bounds = interval_columns(rows)
    if rows.empty:
        return []
    if "diff_ci_covers" in rows and rows["diff_ci_covers"].notna().any():  # what the summary says
        covers = " / ".join(sorted(set(rows["diff_ci_covers"].dropna().astype(str))))
    else:
        covers = "seeds (paired t)"

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        y = np.arange(len(group))[::-1]
        diff = group["diff"].to_numpy(dtype=float)
        if bounds:
            low = np.nan_to_num(diff - group[bounds[0]].to_numpy(dtype=float))
            high = np.nan_to_num(group[bounds[1]].to_numpy(dtype=float) - diff)
        else:
            low = high = np.zeros(len(group))
        marked = group["significant"].fillna(False).to_numpy(dtype=bool) \
            if "significant" in group else np.zeros(len(group), bool)
        for yi, name, resolved, lo, hi, d in zip(y, group["target_set"], marked, low, high,
                                                 diff):
            ax.errorbar(d, yi, xerr=[[lo], [hi]], fmt="s", color=set_color(name), capsize=3,
                        mfc=set_color(name) if resolved else "white")
        pairs = group["n_pairs"] if "n_pairs" in group else group["n"]
        ax.axvline(0, color=BASELINE_COLOR, lw=0.8)
        ax.set_yticks(y, [f"{t} (n={_int(k)})" for t, k in zip(group["target_set"], pairs)],
                      fontsize=8)
        metric = group["metric"].iloc[0]
        ax.set(title=panel_title(key), xlabel=f"Δ {metric} vs {baseline} ({better_way(metric)})")
        ax.grid(axis="x", alpha=0.3)

    title = (f"Difference to {baseline}: interval at its Holm step's level over {covers}; "
             f"n = seeds paired with {baseline} (filled: resolved)")
    return small_multiples(groups(rows), title, draw, per_figure=per_figure)


def _int(value: Any) -> str:
    return "?" if pd.isna(value) else str(int(value))


def curve_figures(curves: pd.DataFrame, *, baseline: str = "qv", confidence: float = 0.95,
                  per_figure: int | None = PANELS_PER_FIGURE) -> list[Figure]:
    """Validation metric against step per target set: the mean over seeds with the same
    t-interval as the tables (mean ± half-width, over the seeds that reached the step);
    the legend gives each line's number of seeds."""
    # A cell with one validation point (eval_every=0: only the final evaluation) draws no
    # line; a panel whose cells all have one is left out, and so is the figure.
    curves = curves[curves["mean"].notna()]
    steps = curves.groupby(group_keys(curves) + ["target_set"], dropna=False)["step"]
    curves = curves[steps.transform("nunique") > 1] if len(curves) else curves
    if curves.empty:
        return []
    curves = curves.assign(half=t_half_width(curves["std"], curves["count"], confidence))

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        for name, line in ordered(group).groupby("target_set", sort=False):
            line = line.sort_values("step")
            width = 2.2 if name == baseline else 1.2
            ax.plot(line["step"], line["mean"], color=set_color(name), lw=width,
                    label=f"{name} (n={int(line['count'].max())})")
            band = line["half"].fillna(0)
            ax.fill_between(line["step"], line["mean"] - band, line["mean"] + band,
                            color=set_color(name), alpha=0.15, lw=0)
        metric = group["metric"].iloc[0] if "metric" in group else None
        ax.set(title=panel_title(key), xlabel="step",
               ylabel=axis_label(metric, "validation metric"))
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)

    title = f"Validation curves: mean over seeds with its {confidence:.0%} t-interval"
    return small_multiples(groups(curves), title, draw, per_figure=per_figure)


def _band_order(values: pd.Series) -> pd.Series:
    known = {name: i for i, name in enumerate(BANDS)}
    return values.map(lambda v: known.get(v, len(BANDS)))


def depth_figures(summary: pd.DataFrame, *, baseline: str = "qv", confidence: float = 0.95,
                  per_figure: int | None = PANELS_PER_FIGURE) -> list[Figure]:
    """Metric by layer band (bottom, middle, top, all) per target set, mean with its
    t-interval over seeds; drawn only when the runs vary `layers`."""
    if summary.empty or "layers" not in summary or summary["layers"].nunique() < 2:
        return []
    keys = group_keys(summary, drop=("layers",))

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        bands = group.drop_duplicates("layers").assign(_b=_band_order(group["layers"]))
        order = list(bands.sort_values(["_b", "layers"])["layers"])
        where = {band: i for i, band in enumerate(order)}
        for name, line in group.groupby("target_set", sort=False):
            line = line.assign(_x=line["layers"].map(where)).sort_values("_x")
            n = pd.to_numeric(line["n"], errors="coerce").fillna(0)
            ax.errorbar(line["_x"], line["mean"],
                        yerr=line["ci_half"].where(n >= 2).fillna(0), marker="o", capsize=3,
                        color=set_color(name), lw=2.2 if name == baseline else 1.2,
                        label=f"{name} (n={int(n.min())}–{int(n.max())})" if n.nunique() > 1
                        else f"{name} (n={int(n.max())})")
        ax.set_xticks(range(len(order)), order)
        ax.set(title=panel_title(key), xlabel="layer band", ylabel=axis_label(group["metric"].iloc[0]))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    title = f"Metric by layer band: mean with {confidence:.0%} t-interval over seeds"
    return small_multiples(groups(summary, keys), title, draw, per_figure=per_figure)


def budget_figures(summary: pd.DataFrame, *, baseline: str = "qv",
                   confidence: float = 0.95) -> list[Figure]:
    """Metric against the trainable-parameter budget, one line per target set; only for
    groups that were run at more than one budget scale."""
    keys = group_keys(summary, drop=("budget_scale",))
    if summary.empty:
        return []
    scan = summary.groupby(keys, dropna=False)["budget_scale"].transform("nunique") > 1
    if not scan.any():
        return []

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        use_params = group["lora_params"].notna().all()
        x_name = "lora_params" if use_params else "budget_scale"
        for name, line in group.groupby("target_set", sort=False):
            line = line.sort_values(x_name)
            ax.errorbar(line[x_name], line["mean"], yerr=line["ci_half"].fillna(0), marker="o",
                        capsize=2, color=set_color(name), label=name,
                        lw=2.2 if name == baseline else 1.2)
        ax.set_xscale("log")
        ax.set(title=panel_title(key),
               xlabel="trainable LoRA parameters" if use_params else "budget scale",
               ylabel=axis_label(group["metric"].iloc[0]))
        ax.grid(alpha=0.3, which="both")

    title = f"Metric against budget (mean, {confidence:.0%} t-interval over seeds)"
    return small_multiples(groups(summary[scan], keys), title, draw, shared=True)


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both lower cost and higher quality,
    ordered by cost (a loss enters as its negative: cost_figures)."""
    order = np.lexsort((-quality, cost))
    front, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            front.append(i)
            best = quality[i]
    return np.asarray(front, dtype=int)


def cost_figures(summary: pd.DataFrame, *, baseline: str = "qv") -> list[Figure]:
    """Mean metric against mean training time (or LoRA parameters) with the Pareto front."""
    x_name = next((c for c in ("train_seconds", "lora_params")
                   if c in summary and summary[c].notna().any()), None)
    if x_name is None or summary.empty:
        return []
    rows = summary[summary[x_name].notna() & summary["mean"].notna()]

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        sign = 1.0 if is_higher_better(group["metric"].iloc[0]) else -1.0
        cost, quality = group[x_name].to_numpy(float), group["mean"].to_numpy(float)
        ax.scatter(cost, quality, c=[set_color(t) for t in group["target_set"]], zorder=3)
        for xi, yi, name in zip(cost, quality, group["target_set"]):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.margins(x=0.12, y=0.1)  # room for the labels of the extreme points
        front = pareto_front(cost, sign * quality)
        ax.step(cost[front], quality[front], where="post", color=BASELINE_COLOR, lw=1, label="Pareto front")
        ax.set(title=panel_title(key), ylabel=axis_label(group["metric"].iloc[0]),
               xlabel="mean train seconds" if x_name == "train_seconds" else "LoRA parameters")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)

    return small_multiples(groups(rows), "Quality against cost per target set (means)", draw)


def _heat_matrix(group: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    means = group.pivot_table(index="target_set", columns="task", values="mean", aggfunc="first")
    means = means.loc[ordered(means.index.to_frame(index=False))["target_set"]]
    signs = pd.Series({t: 1.0 if is_higher_better(m) else -1.0
                       for t, m in group.drop_duplicates("task")[["task", "metric"]].values})
    scored = means * signs[means.columns]
    span = (scored.max() - scored.min()).replace(0, np.nan)
    return means, ((scored - scored.min()) / span).fillna(0.5)


def heatmap_figures(summary: pd.DataFrame) -> list[Figure]:
    """Target set × task means, coloured within each task (tasks differ in difficulty)."""
    if summary.empty or summary["task"].nunique() < 2:
        return []
    keys = group_keys(summary, drop=("task",))

    def draw(ax: Axes, key: Mapping[str, Any], group: pd.DataFrame) -> None:
        means, shade = _heat_matrix(group)
        image = ax.imshow(shade.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(means.to_numpy()):
            if value == value:
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if shade.iat[i, j] < 0.5 else "black")
        ax.set_xticks(range(means.shape[1]), means.columns, rotation=30, ha="right")
        ax.set_yticks(range(means.shape[0]), means.index)
        ax.set(title=panel_title(key), xlabel="task", ylabel="target set")
        ax.figure.colorbar(image, ax=ax, label="within task: 0 worst, 1 best")

    return small_multiples(groups(summary, keys), "Mean metric per target set and task", draw)


# ---------------------------------------------------------------- the report's figures

# Stems of the report's figures and what their intervals cover (the captions under them).
CAPTIONS = {
    "means": "Every seed (grey dots) and the mean per target set with its t-interval over "
             "seeds (test examples held fixed); one-seed cells have no bar and say n=1. "
             "Each target set has one colour in every figure.",
    "differences": "Difference to the baseline per target set with its interval at the level "
                   "of its Holm step (the family procedure), so an interval excludes 0 exactly "
                   "when the difference is resolved (filled marker); its SE covers seeds, plus "
                   "the set × example term where per-example values exist (correctness, exact "
                   "match, SFT loss and token accuracy).",
    "curves": "Validation metric during training: mean over seeds with its t-interval over "
              "the seeds that reached the step; n in the legend.",
    "depth": "Metric by layer band per target set: mean with its t-interval over seeds.",
    "budget": "Metric against the trainable-parameter budget: mean with its t-interval over "
              "seeds.",
    "cost": "Mean metric against mean training cost, with the Pareto front (no intervals).",
    "heatmap": "Mean metric per target set and task, shaded within each task (no intervals).",
}


def report_figures(summary: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame, *,
                   baseline: str = "qv", confidence: float = 0.95
                   ) -> dict[str, list[Figure]]:
    """Every figure the data supports, by stem (see CAPTIONS)."""
    if summary.empty:  # no completed run has the metric yet
        return {}
    summary = summary.astype({"budget_scale": float})
    built = {
        "means": means_figures(summary, runs, baseline=baseline, confidence=confidence),
        "differences": difference_figures(summary, baseline=baseline, confidence=confidence),
        "curves": curve_figures(curves, baseline=baseline, confidence=confidence),
        "depth": depth_figures(summary, baseline=baseline, confidence=confidence),
        "budget": budget_figures(summary, baseline=baseline, confidence=confidence),
        "cost": cost_figures(summary, baseline=baseline),
        "heatmap": heatmap_figures(summary),
    }
    return {stem: figures for stem, figures in built.items() if figures}


def write_figures(figures: Mapping[str, list[Figure]], folder: Path) -> list[Path]:
    """Save each figure as folder/<stem>[_<n>].png and .svg; return the paths written."""
    paths = []
    for stem, group in figures.items():
        for number, fig in enumerate(group, start=1):
            paths += save(fig, folder, stem if len(group) == 1 else f"{stem}_{number}")
    return paths
