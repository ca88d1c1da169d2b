"""Figures of a sweep summary, written as PNG and SVG.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so nothing is shown, no global figure registry grows, and a notebook's backend is left
alone. Every figure is skipped (not failed) when its data is missing.
"""

import io
import math
import multiprocessing
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lora_ablate.report.aggregate import GROUP, is_higher_better, target_order
from lora_ablate.files import write_atomic

PANELS_PER_FIGURE = 12  # more groups spill into numbered figures, keeping each readable
BASELINE_COLOR = "black"
TITLE_LINE_INCHES = 0.2  # height of one more line of the 11 pt figure title


def _save(fig: Figure, folder: Path, stem: str) -> list[Path]:
    FigureCanvasAgg(fig)
    paths = []
    # SVG text stays text (not glyph paths): smaller, searchable and much faster to write.
    with rc_context({"svg.fonttype": "none"}):
        for fmt, extra in (("png", {"dpi": 100}), ("svg", {"metadata": {"Date": None}})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, **extra)
            paths.append(write_atomic(folder / f"{stem}.{fmt}", buffer.getvalue()))
    return paths


def _grid(n: int, title: str, legend_width: float = 0.0) -> tuple[Figure, list[Axes]]:
    """Panels of a fixed size in inches with fixed margins: a layout engine (constrained or
    tight) measures every text twice per save and would dominate the report's run time."""
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    panel_w, panel_h, gap_w, gap_h = 3.6, 2.5, 1.1, 1.6  # inches
    left, right, bottom = 0.9, 0.3 + legend_width, 0.9
    width = left + right + ncols * panel_w + (ncols - 1) * gap_w
    # A long title over a single panel would run off both edges: wrap it to the figure
    # (about 12 characters an inch at 11 pt) and make room for the extra lines.
    title = textwrap.fill(title, width=max(20, int(width * 12)))
    top = 1.0 + TITLE_LINE_INCHES * title.count("\n")
    height = top + bottom + nrows * panel_h + (nrows - 1) * gap_h
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11, y=1 - 0.25 / height, va="top")
    return fig, axes[:n]


def _group_title(key: Sequence[Any]) -> str:
    model, task, budget, scale, _layers, variant = key
    extra = f"\n{variant}" if isinstance(variant, str) and variant else ""
    return f"{model} · {task}\nbudget {budget} ×{scale:g}{extra}"


def _shared_legend(fig: Figure, axes: Sequence[Axes], legend_width: float) -> None:
    """One legend for all panels (colours are the same in every panel), right of them."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        x = 1 - (legend_width + 0.1) / fig.get_figwidth()
        fig.legend(entries.values(), entries.keys(), loc="center left", bbox_to_anchor=(x, 0.5),
                   fontsize=8, title="target set", frameon=False)


def _small_multiples(groups: list[tuple[Any, pd.DataFrame]], folder: Path, stem: str,
                     title: str, draw: Callable[[Axes, Any, pd.DataFrame], None],
                     shared_legend: bool = False) -> list[Path]:
    paths = []
    legend_width = 1.2 if shared_legend else 0.0
    chunks = [groups[i:i + PANELS_PER_FIGURE] for i in range(0, len(groups), PANELS_PER_FIGURE)]
    for number, chunk in enumerate(chunks, start=1):
        fig, axes = _grid(len(chunk), title, legend_width)
        for ax, (key, rows) in zip(axes, chunk):
            draw(ax, key, rows)
        if shared_legend:
            _shared_legend(fig, axes, legend_width)
        name = stem if len(chunks) == 1 else f"{stem}_{number}"
        paths += _save(fig, folder, name)
    return paths


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(_o=target_order(rows["target_set"])).sort_values(["_o", "target_set"])


def _groups(frame: pd.DataFrame, keys: Sequence[str] = GROUP) -> list[tuple[Any, pd.DataFrame]]:
    return [(key, _ordered(rows)) for key, rows in frame.groupby(list(keys), sort=True)]


def _colors(summary: pd.DataFrame) -> dict[str, Any]:
    names = _ordered(summary.drop_duplicates("target_set"))["target_set"]
    cycle = [f"C{i}" for i in range(10)] + ["tab:olive", "tab:cyan", "navy", "maroon"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


# ---------------------------------------------------------------- the figures


def plot_means(summary: pd.DataFrame, folder: Path, baseline: str, confidence: float) -> list[Path]:
    """Mean metric per target set with its t-interval; baseline in black with a dashed line."""
    def draw(ax: Axes, key: Any, rows: pd.DataFrame) -> None:
        x = np.arange(len(rows))
        is_base = rows["target_set"].eq(baseline).to_numpy()
        for mask, color in ((~is_base, "C0"), (is_base, BASELINE_COLOR)):
            ax.errorbar(x[mask], rows["mean"][mask], yerr=rows["ci_half"][mask].fillna(0),
                        fmt="o", color=color, capsize=3)
        marked = rows["significant"].fillna(False).to_numpy(dtype=bool)
        tops = rows["ci_high"].fillna(rows["mean"]).to_numpy()
        for xi in x[marked]:
            ax.annotate("†", (xi, tops[xi]), ha="center", va="bottom", fontsize=11)
        if is_base.any():
            ax.axhline(rows["mean"][is_base].iloc[0], color=BASELINE_COLOR, ls="--", lw=0.8,
                       label=f"baseline {baseline}")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xticks(x, rows["target_set"], rotation=45, ha="right")
        ax.set(title=_group_title(key), xlabel="target set", ylabel=rows["metric"].iloc[0])
        ax.grid(axis="y", alpha=0.3)

    title = (f"Mean over seeds with {confidence:.0%} t-interval "
             f"(† significant vs {baseline}, Holm-adjusted paired t)")
    return _small_multiples(_groups(summary), folder, "means", title, draw)


def plot_forest(summary: pd.DataFrame, folder: Path, baseline: str,
                confidence: float) -> list[Path]:
    """Paired difference to the baseline per target set, with the t-interval of the differences."""
    rows = summary[summary["target_set"].ne(baseline) & summary["diff"].notna()]
    if rows.empty:
        return []

    def draw(ax: Axes, key: Any, group: pd.DataFrame) -> None:
        y = np.arange(len(group))[::-1]
        low = (group["diff"] - group["diff_ci_low"]).fillna(0).to_numpy()
        high = (group["diff_ci_high"] - group["diff"]).fillna(0).to_numpy()
        marked = group["significant"].fillna(False).to_numpy(dtype=bool)
        for mask, color in ((~marked, "C0"), (marked, "C3")):
            ax.errorbar(group["diff"].to_numpy()[mask], y[mask], xerr=[low[mask], high[mask]],
                        fmt="s", color=color, capsize=3)
        ax.axvline(0, color=BASELINE_COLOR, lw=0.8)
        ax.set_yticks(y, group["target_set"])
        ax.set(title=_group_title(key), xlabel=f"Δ {group['metric'].iloc[0]} vs {baseline}",
               ylabel="target set")
        ax.grid(axis="x", alpha=0.3)

    title = (f"Paired difference to {baseline} over shared seeds, {confidence:.0%} t-interval "
             f"(red: significant after Holm)")
    return _small_multiples(_groups(rows), folder, "forest", title, draw)


def plot_curves(curves: pd.DataFrame, summary: pd.DataFrame, folder: Path,
                baseline: str) -> list[Path]:
    """Validation metric against step: mean over seeds with a ±1 std band per target set."""
    if curves.empty:
        return []
    colors = _colors(summary)
    val_names = {task: "val/" + metric.split("/", 1)[-1]
                 for task, metric in summary[["task", "metric"]].drop_duplicates().values}

    def draw(ax: Axes, key: Any, group: pd.DataFrame) -> None:
        for name, line in _ordered(group).groupby("target_set", sort=False):
            line = line.sort_values("step")
            width = 2.2 if name == baseline else 1.2
            ax.plot(line["step"], line["mean"], color=colors.get(name), lw=width, label=name)
            band = line["std"].fillna(0)
            ax.fill_between(line["step"], line["mean"] - band, line["mean"] + band,
                            color=colors.get(name), alpha=0.15, lw=0)
        ax.set(title=_group_title(key), xlabel="step", ylabel=val_names.get(key[1], "val"))
        ax.grid(alpha=0.3)

    groups = [(key, rows) for key, rows in curves.groupby(list(GROUP), sort=True)]
    return _small_multiples(groups, folder, "curves", "Validation curves: mean ± 1 std over seeds",
                            draw, shared_legend=True)


def plot_budget(summary: pd.DataFrame, folder: Path, baseline: str,
                confidence: float) -> list[Path]:
    """Metric against the trainable-parameter budget, one line per target set; only for
    (model, task, budget) groups that were run at more than one budget scale."""
    keys = ["model", "task", "budget", "variant"]
    scan = summary.groupby(keys)["budget_scale"].transform("nunique") > 1
    if not scan.any():
        return []
    colors = _colors(summary)

    def draw(ax: Axes, key: Any, group: pd.DataFrame) -> None:
        use_params = group["lora_params"].notna().all()
        x_name = "lora_params" if use_params else "budget_scale"
        for name, line in group.groupby("target_set", sort=False):
            line = line.sort_values(x_name)
            ax.errorbar(line[x_name], line["mean"], yerr=line["ci_half"].fillna(0), marker="o",
                        capsize=2, color=colors.get(name), label=name,
                        lw=2.2 if name == baseline else 1.2)
        ax.set_xscale("log")
        ax.set(title=f"{key[0]} · {key[1]} · budget {key[2]}",
               xlabel="trainable LoRA parameters" if use_params else "budget scale",
               ylabel=group["metric"].iloc[0])
        ax.grid(alpha=0.3, which="both")

    title = f"Metric against budget (mean, {confidence:.0%} t-interval)"
    return _small_multiples(_groups(summary[scan], keys), folder, "budget", title, draw,
                            shared_legend=True)


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both lower cost and higher quality,
    ordered by cost."""
    order = np.lexsort((-quality, cost))
    front, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            front.append(i)
            best = quality[i]
    return np.asarray(front, dtype=int)


def plot_cost(summary: pd.DataFrame, folder: Path, baseline: str) -> list[Path]:
    """Mean metric against mean training time (or LoRA parameters) with the Pareto front."""
    x_name = next((c for c in ("train_seconds", "lora_params") if summary[c].notna().any()), None)
    if x_name is None or summary.empty:
        return []
    rows = summary[summary[x_name].notna() & summary["mean"].notna()]

    def draw(ax: Axes, key: Any, group: pd.DataFrame) -> None:
        sign = 1.0 if is_higher_better(group["metric"].iloc[0]) else -1.0
        cost, quality = group[x_name].to_numpy(float), group["mean"].to_numpy(float)
        colors = np.where(group["target_set"].eq(baseline), BASELINE_COLOR, "C0")
        ax.scatter(cost, quality, c=colors, zorder=3)
        for xi, yi, name in zip(cost, quality, group["target_set"]):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.margins(x=0.12, y=0.1)  # room for the labels of the extreme points
        front = pareto_front(cost, sign * quality)
        ax.step(cost[front], quality[front], where="post", color="C3", lw=1, label="Pareto front")
        ax.set(title=_group_title(key), ylabel=group["metric"].iloc[0],
               xlabel="mean train seconds" if x_name == "train_seconds" else "LoRA parameters")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)

    return _small_multiples(_groups(rows), folder, "cost", "Quality against cost per target set",
                            draw)


def _heat_matrix(group: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    means = group.pivot_table(index="target_set", columns="task", values="mean", aggfunc="first")
    means = means.loc[_ordered(means.index.to_frame(index=False))["target_set"]]
    signs = pd.Series({t: 1.0 if is_higher_better(m) else -1.0
                       for t, m in group.drop_duplicates("task")[["task", "metric"]].values})
    scored = means * signs[means.columns]
    span = (scored.max() - scored.min()).replace(0, np.nan)
    return means, ((scored - scored.min()) / span).fillna(0.5)


def plot_heatmap(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Target set × task means, coloured within each task (tasks differ in difficulty)."""
    if summary["task"].nunique() < 2:
        return []
    keys = ["model", "budget", "budget_scale", "variant"]

    def draw(ax: Axes, key: Any, group: pd.DataFrame) -> None:
        means, shade = _heat_matrix(group)
        image = ax.imshow(shade.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(means.to_numpy()):
            if value == value:
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if shade.iat[i, j] < 0.5 else "black")
        ax.set_xticks(range(means.shape[1]), means.columns, rotation=30, ha="right")
        ax.set_yticks(range(means.shape[0]), means.index)
        ax.set(title=f"{key[0]} · budget {key[1]} ×{key[2]:g}", xlabel="task",
               ylabel="target set")
        ax.figure.colorbar(image, ax=ax, label="within task: 0 worst, 1 best")

    return _small_multiples([(k, g) for k, g in summary.groupby(keys, sort=True)], folder,
                            "heatmap", "Mean metric per target set and task", draw)


def default_workers(jobs: int) -> int:
    """Processes to draw with. Only forking shares the already imported matplotlib for
    free; spawn/forkserver would re-import it (and the caller's __main__), costing more
    than they save, so other platforms draw in this process."""
    if sys.platform != "linux":
        return 1
    return max(1, min(jobs, len(os.sched_getaffinity(0))))


def _jobs(summary: pd.DataFrame, curves: pd.DataFrame, folder: Path, baseline: str,
          confidence: float) -> list[tuple[Callable[..., list[Path]], tuple]]:
    if summary.empty:  # no completed run has the metric yet
        return []
    summary = summary.astype({"budget_scale": float})
    return [  # slowest first, so parallel workers finish together
        (plot_curves, (curves, summary, folder, baseline)),
        (plot_forest, (summary, folder, baseline, confidence)),
        (plot_means, (summary, folder, baseline, confidence)),
        (plot_cost, (summary, folder, baseline)),
        (plot_budget, (summary, folder, baseline, confidence)),
        (plot_heatmap, (summary, folder)),
    ]


@contextmanager
def drawing_figures(summary: pd.DataFrame, curves: pd.DataFrame, folder: Path, *,
                    baseline: str = "qv", confidence: float = 0.95,
                    workers: int | None = None) -> Iterator[Callable[[], list[Path]]]:
    """Start drawing every figure the data supports (PNG and SVG under `folder`) in worker
    processes, so the caller can write its tables meanwhile; the yielded function waits and
    returns the written paths. With one worker, figures are drawn when it is called."""
    jobs = _jobs(summary, curves, folder, baseline, confidence)
    workers = default_workers(len(jobs)) if workers is None else workers
    if workers <= 1:
        yield lambda: [path for plot, args in jobs for path in plot(*args)]
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(plot, *args) for plot, args in jobs]
        yield lambda: [path for future in futures for path in future.result()]


def write_figures(summary: pd.DataFrame, curves: pd.DataFrame, folder: Path, *,
                  baseline: str = "qv", confidence: float = 0.95,
                  workers: int | None = None) -> list[Path]:
    """Write every figure the data supports to `folder` (PNG and SVG); return their paths.
    Figures are drawn in parallel processes (`workers`, default: one per CPU, up to 6)."""
    with drawing_figures(summary, curves, folder, baseline=baseline, confidence=confidence,
                         workers=workers) as drawn:
        return drawn()
