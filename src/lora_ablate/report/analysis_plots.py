"""Figures for "why a target set wins", each drawn from a frame of analysis_frames and
returned as one matplotlib Figure with a panel per group (model, task, budget, …), through
figure_base's grid and colours: a target set (and a matrix kind, named like its one-matrix
set) has the same colour here as in the results figures. No torch, no pyplot.

Norm ratios, amplification factors, KL divergences and relative shifts cannot be negative:
their intervals' lower ends are clipped at 0 (the captions say so)."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lora_ablate.report.figure_base import (BASELINE_COLOR, PANEL, clipped_below, groups,
                                            message_figure, ordered_sets, panel_title,
                                            set_color, small_multiples)

RELATIVE_NORM = r"$\Vert\Delta W\Vert_F\,/\,\Vert W\Vert_F$"  # mathtext: renders as a formula
AMPLIFICATION = r"$\Vert\Delta W\Vert_F\,/\,\Vert U^\top W V\Vert_F$"


def _errorbars(frame: pd.DataFrame, floor: float | None = None) -> np.ndarray:
    """Lengths below and above each mean; the lower end raised to `floor` when given."""
    low = (frame["mean"] - frame["ci_low"]).fillna(0).to_numpy() if floor is None \
        else clipped_below(frame["mean"], frame["ci_low"], floor)
    high = (frame["ci_high"] - frame["mean"]).fillna(0).to_numpy()
    return np.vstack([low, high])


def _figure(panels: list[tuple[dict[str, Any], pd.DataFrame]], title: str, draw,
            **layout: Any) -> Figure:
    """All panels in one figure (the report shows each analysis figure once)."""
    if not panels:
        return message_figure(f"{title}: no analysed runs")
    return small_multiples(panels, title, draw, per_figure=None, **layout)[0]


def _per_set(frame: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """A panel per group and target set."""
    return [({**key, "target_set": name}, rows[rows["target_set"].eq(name)])
            for key, rows in groups(frame) for name in ordered_sets(rows)]


def plot_relative_norm(frame: pd.DataFrame) -> Figure:
    """‖ΔW‖/‖W‖ by layer, one line per matrix kind, a panel per group and target set
    (relative_norm_frame)."""
    title = f"Relative update norm {RELATIVE_NORM} by layer (mean over seeds, 95% CI, clipped at 0)"

    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        for matrix, rows in part.groupby("matrix", sort=True):
            rows = rows.groupby("layer", as_index=False).mean(numeric_only=True).sort_values("layer")
            ax.errorbar(rows["layer"], rows["mean"], yerr=_errorbars(rows, floor=0.0), marker="o",
                        ms=3, capsize=2, color=set_color(matrix), label=matrix)
        ax.set_title(panel_title(key, str(key["target_set"])), fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="layer", ylabel=RELATIVE_NORM)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)

    return _figure(_per_set(frame) if len(frame) else [], title, draw)


def plot_amplification(frame: pd.DataFrame) -> Figure:
    """Amplification ‖ΔW‖_F / ‖UᵀWV‖_F by matrix kind, bars per target set, a panel per group
    (amplification_frame)."""
    title = f"Amplification {AMPLIFICATION} by matrix (mean over layers and seeds, 95% CI, clipped at 0)"
    if frame.empty:
        return message_figure(f"{title}: no analysed runs")
    matrices = sorted(frame["matrix"].unique())
    sets = ordered_sets(frame)
    width = 0.8 / len(matrices)

    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        shown = ordered_sets(part)
        for k, matrix in enumerate(matrices):
            rows = part[part["matrix"] == matrix].set_index("target_set").reindex(shown)
            x = np.arange(len(shown)) + (k - (len(matrices) - 1) / 2) * width
            ax.bar(x, rows["mean"], width, yerr=_errorbars(rows, floor=0.0), capsize=2,
                   color=set_color(matrix), label=matrix)
        ax.set_xticks(np.arange(len(shown)), shown, rotation=30)
        ax.set(title=panel_title(key), ylabel="amplification")
        ax.legend(fontsize=7, ncols=min(4, len(matrices)))

    panel = (max(PANEL[0], 0.35 * len(sets) * len(matrices) + 1.0), 3.0)
    return _figure(groups(frame), title, draw, panel=panel, ncols=2)


def plot_seed_similarity(frame: pd.DataFrame) -> Figure:
    """φ(i, j) heat map per matrix kind between seeds of one target set, a panel per group
    and matrix kind (seed_similarity_frame)."""
    title = "Seed-to-seed subspace similarity φ(i, j) of ΔW"
    if frame.empty:
        return message_figure(f"{title}: no analysed runs")
    title += f" ({frame['target_set'].iloc[0]}, mean over seed pairs and layers)"
    panels = [({**key, "matrix": matrix}, rows[rows["matrix"] == matrix])
              for key, rows in groups(frame) for matrix in sorted(rows["matrix"].unique())]

    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        grid = part.pivot_table(index="i", columns="j", values="phi", aggfunc="mean")
        image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="upper",
                          extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
        ax.set_title(panel_title(key, f"{key['matrix']} ({int(part['pairs'].max())} pairs)"), fontsize=9)
        ax.set(xlabel="j (seed b)", ylabel="i (seed a)")
        ax.figure.colorbar(image, ax=ax, shrink=0.8)

    return _figure(panels, title, draw)


def plot_shifts(frame: pd.DataFrame) -> Figure:
    """Attention shift (KL) against content shift per target set, a panel per group
    (shift_summary_frame); both are non-negative, so intervals stop at 0."""
    title = "Where the update acts: attention shift vs content shift (mean over seeds, 95% CI, clipped at 0)"

    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        for _, row in part.iterrows():
            xerr = _one_bar(row["mean_content"], row["ci_low_content"], row["ci_high_content"])
            yerr = _one_bar(row["mean_attention"], row["ci_low_attention"], row["ci_high_attention"])
            ax.errorbar(row["mean_content"], row["mean_attention"], xerr=xerr, yerr=yerr, fmt="o", capsize=2,
                        color=set_color(row["target_set"]))
            ax.annotate(str(row["target_set"]), (row["mean_content"], row["mean_attention"]),
                        fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set(title=panel_title(key), xlabel="content shift ‖out_adapted − out_base‖ / ‖out_base‖",
               ylabel="attention shift: mean KL(adapted ‖ base)")

    return _figure(groups(frame) if len(frame) else [], title, draw, panel=(4.8, 3.6), ncols=2)


def _one_bar(mean: float, low: float, high: float) -> np.ndarray:
    """One point's error bar as [[below], [above]], the lower end clipped at 0."""
    return np.array([[float(clipped_below(mean, low))], [float(np.nan_to_num(high - mean))]])


def _bars(frame: pd.DataFrame, title: str, ylabel: str,
          ticks: Any = None) -> Figure:
    """A bar per target set in its colour, a panel per group; `ticks(rows)` labels them."""
    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        rows = part.set_index("target_set")
        x = np.arange(len(rows))
        ax.bar(x, rows["mean"], 0.6, yerr=_errorbars(rows), capsize=3,
               color=[set_color(s) for s in rows.index])
        labels = ticks(rows) if ticks else [f"{s}\nn={_count(n)}" for s, n in zip(rows.index, rows["n"])]
        ax.set_xticks(x, labels, fontsize=7)
        ax.axhline(0, color=BASELINE_COLOR, lw=0.8)
        ax.set(title=panel_title(key), ylabel=ylabel)

    sets = frame["target_set"].nunique() if len(frame) else 0
    return _figure(groups(frame) if len(frame) else [], title, draw,
                   panel=(max(PANEL[0], 0.8 * sets + 1.0), 3.0), ncols=2)


def _count(n: Any) -> int:
    return int(n) if n == n else 0


def plot_attention_share(frame: pd.DataFrame) -> Figure:
    """Share of the gain carried by attention per target set (attention_share_frame)."""
    return _bars(frame, "Share of the gain over the base model carried by attention "
                        "(attention patching, 95% CI)", "1 − (patched − base) / (full − base)")


def plot_merge_curve(frame: pd.DataFrame) -> Figure:
    """The metric against the merge weight s, one line per target set, a panel per group
    (merge_curve_frame); the y axis names the metric and which way is better."""
    title = ("Test metric vs merge weight s (s=0: the base model, with the trained head on "
             "classification tasks; s=1: as trained)")

    def draw(ax: Axes, key: Mapping[str, Any], part: pd.DataFrame) -> None:
        for target_set in ordered_sets(part):
            rows = part[part["target_set"] == target_set].sort_values("weight")
            color = set_color(target_set)
            ax.plot(rows["weight"], rows["mean"], marker="o", ms=3, color=color, label=target_set)
            ax.fill_between(rows["weight"], rows["ci_low"].fillna(rows["mean"]),
                            rows["ci_high"].fillna(rows["mean"]), color=color, alpha=0.15, lw=0)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set(title=panel_title(key), xlabel="merge weight s", ylabel=_metric_label(part))
        ax.legend(fontsize=7, ncols=2)

    return _figure(groups(frame) if len(frame) else [], title, draw, panel=(4.8, 3.4), ncols=2)


def _metric_label(part: pd.DataFrame) -> str:
    """"loss (lower is better)": the panel's metric and its direction, where the frame has them."""
    if "metric" not in part:
        return "metric"
    label = ", ".join(str(m) for m in part["metric"].unique())
    if "higher_is_better" in part and part["higher_is_better"].nunique() == 1:
        label += " (higher is better)" if bool(part["higher_is_better"].iloc[0]) else " (lower is better)"
    return label


def plot_routing_gap(frame: pd.DataFrame) -> Figure:
    """Routing-minus-control gap per target set, paired by seed (routing_gap_frame), with
    each set's routing and control means under its bar; a panel per group."""
    def ticks(rows: pd.DataFrame) -> Sequence[str]:
        return [f"{s}\nn={_count(r.n)}\nr {r.routing:.2f}\nc {r.control:.2f}" for s, r in rows.iterrows()]

    return _bars(frame, "diag_routing − diag_control per target set (paired by seed, 95% CI)",
                 "routing − control", ticks if "routing" in frame else None)
