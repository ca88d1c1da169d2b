"""Figures for "why a target set wins", each drawn from a frame of analysis_frames and
returned as a matplotlib Figure (the caller saves or embeds it). No torch, no pyplot."""

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lora_ablate.report.ordering import target_order

PANEL = (3.6, 2.6)  # inches


def _panels(n: int, title: str, ncols: int = 3, size: tuple[float, float] | None = None) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    width, height = size or (PANEL[0] * ncols + 0.8, PANEL[1] * nrows + 0.9)
    title = textwrap.fill(title, width=max(30, int(width * 11)))  # about 11 characters an inch at 11 pt
    fig = Figure(figsize=(width, height + 0.2 * title.count("\n")), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig, axes[:max(n, 1)]


def _ordered_sets(frame: pd.DataFrame) -> list[str]:
    sets = pd.Series(sorted(frame["target_set"].dropna().unique()))
    return list(sets.iloc[np.argsort(target_order(sets).to_numpy(), kind="stable")])


def _errorbars(frame: pd.DataFrame) -> np.ndarray:
    low = (frame["mean"] - frame["ci_low"]).fillna(0).to_numpy()
    high = (frame["ci_high"] - frame["mean"]).fillna(0).to_numpy()
    return np.vstack([low, high])


def _empty(title: str) -> Figure:
    fig, (ax,) = _panels(1, title)
    ax.text(0.5, 0.5, "no analysed runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def plot_relative_norm(frame: pd.DataFrame) -> Figure:
    """‖ΔW‖/‖W‖ by layer, one line per matrix kind, one panel per target set (relative_norm_frame)."""
    title = "Relative update norm ‖ΔW‖_F / ‖W‖_F by layer (mean over seeds, 95% CI)"
    if frame.empty:
        return _empty(title)
    sets = _ordered_sets(frame)
    fig, axes = _panels(len(sets), title)
    for ax, target_set in zip(axes, sets):
        part = frame[frame["target_set"] == target_set]
        for matrix, rows in part.groupby("matrix", sort=True):
            rows = rows.groupby("layer", as_index=False).mean(numeric_only=True).sort_values("layer")
            ax.errorbar(rows["layer"], rows["mean"], yerr=_errorbars(rows), marker="o", ms=3, capsize=2, label=matrix)
        ax.set_title(target_set)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("layer")
        ax.set_ylabel("‖ΔW‖ / ‖W‖")
        ax.legend(fontsize=7)
    return fig


def plot_amplification(frame: pd.DataFrame) -> Figure:
    """Amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F by matrix kind, bars per target set (amplification_frame)."""
    title = "Amplification ‖ΔW‖_F / ‖UᵀWV‖_F by matrix (mean over layers and seeds, 95% CI)"
    if frame.empty:
        return _empty(title)
    sets = _ordered_sets(frame)
    matrices = sorted(frame["matrix"].unique())
    fig, (ax,) = _panels(1, title, size=(max(6.0, 0.7 * len(sets) * max(1, len(matrices)) / 2 + 2), 3.6))
    width = 0.8 / len(matrices)
    for k, matrix in enumerate(matrices):
        rows = frame[frame["matrix"] == matrix].groupby("target_set").mean(numeric_only=True).reindex(sets)
        x = np.arange(len(sets)) + (k - (len(matrices) - 1) / 2) * width
        ax.bar(x, rows["mean"], width, yerr=_errorbars(rows), capsize=2, label=matrix)
    ax.set_xticks(np.arange(len(sets)), sets, rotation=30)
    ax.set_ylabel("amplification")
    ax.legend(fontsize=7, ncols=min(4, len(matrices)))
    return fig


def plot_seed_similarity(frame: pd.DataFrame) -> Figure:
    """φ(i, j) heat map per matrix kind between seeds of one target set (seed_similarity_frame)."""
    title = "Seed-to-seed subspace similarity φ(i, j) of ΔW"
    if frame.empty:
        return _empty(title)
    title += f" ({frame['target_set'].iloc[0]}, mean over seed pairs and layers)"
    matrices = sorted(frame["matrix"].unique())
    fig, axes = _panels(len(matrices), title)
    for ax, matrix in zip(axes, matrices):
        grid = frame[frame["matrix"] == matrix].pivot_table(index="i", columns="j", values="phi", aggfunc="mean")
        image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="upper",
                          extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
        ax.set_title(f"{matrix} ({int(frame[frame['matrix'] == matrix]['pairs'].max())} pairs)")
        ax.set_xlabel("j (seed b)")
        ax.set_ylabel("i (seed a)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def plot_shifts(frame: pd.DataFrame) -> Figure:
    """Attention shift (KL) against content shift per target set (shift_summary_frame)."""
    title = "Where the update acts: attention shift vs content shift (mean over seeds, 95% CI)"
    if frame.empty:
        return _empty(title)
    fig, (ax,) = _panels(1, title, size=(6.4, 4.4))
    for _, row in frame.iterrows():
        xerr = [[row["mean_content"] - row["ci_low_content"]], [row["ci_high_content"] - row["mean_content"]]]
        yerr = [[row["mean_attention"] - row["ci_low_attention"]], [row["ci_high_attention"] - row["mean_attention"]]]
        xerr, yerr = np.nan_to_num(np.array(xerr)), np.nan_to_num(np.array(yerr))
        ax.errorbar(row["mean_content"], row["mean_attention"], xerr=xerr, yerr=yerr, fmt="o", capsize=2)
        ax.annotate(str(row["target_set"]), (row["mean_content"], row["mean_attention"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("content shift ‖out_adapted − out_base‖ / ‖out_base‖")
    ax.set_ylabel("attention shift: mean KL(adapted ‖ base)")
    return fig


def _bars(frame: pd.DataFrame, title: str, ylabel: str, zero: bool = True, note_column: str | None = None) -> Figure:
    if frame.empty:
        return _empty(title)
    sets = _ordered_sets(frame)
    rows = frame.groupby("target_set").mean(numeric_only=True).reindex(sets)
    # Several groups per target set (e.g. two tasks): a mean of their means, and no bar,
    # since averaged interval ends are not an interval.
    pooled = frame.groupby("target_set").size().reindex(sets) > 1
    rows.loc[pooled, ["ci_low", "ci_high"]] = np.nan
    rows["n"] = frame.groupby("target_set")["n"].sum().reindex(sets)
    fig, (ax,) = _panels(1, title, size=(max(6.0, 0.8 * len(sets) + 2), 3.8))
    x = np.arange(len(sets))
    ax.bar(x, rows["mean"], 0.6, yerr=_errorbars(rows), capsize=3, color="tab:blue")
    labels = [f"{s}\nn={int(n) if n == n else 0}" for s, n in zip(sets, rows["n"])]
    ax.set_xticks(x, labels, fontsize=8)
    if zero:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(ylabel)
    return fig


def plot_attention_share(frame: pd.DataFrame) -> Figure:
    """Share of the gain carried by attention per target set (attention_share_frame)."""
    return _bars(frame, "Share of the gain over the base model carried by attention (attention patching, 95% CI)",
                 "1 − (patched − base) / (full − base)")


def plot_merge_curve(frame: pd.DataFrame) -> Figure:
    """The metric against the merge weight s, one line per target set (merge_curve_frame)."""
    title = "Metric vs merge weight s (s=0: base model with the trained head; s=1: as trained)"
    if frame.empty:
        return _empty(title)
    fig, (ax,) = _panels(1, title, size=(6.8, 4.2))
    for target_set in _ordered_sets(frame):
        rows = frame[frame["target_set"] == target_set].groupby("weight", as_index=False).mean(numeric_only=True)
        ax.plot(rows["weight"], rows["mean"], marker="o", ms=3, label=target_set)
        ax.fill_between(rows["weight"], rows["ci_low"].fillna(rows["mean"]), rows["ci_high"].fillna(rows["mean"]), alpha=0.15)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("merge weight s")
    ax.set_ylabel(str(frame["metric"].iloc[0]) if "metric" in frame else "metric")
    ax.legend(fontsize=7, ncols=2)
    return fig


def plot_routing_gap(frame: pd.DataFrame) -> Figure:
    """Routing-minus-control gap per target set, paired by seed (routing_gap_frame), with
    each set's routing and control means under its bar."""
    fig = _bars(frame, "diag_routing − diag_control per target set (paired by seed, 95% CI)",
                "routing − control")
    if frame.empty or "routing" not in frame:
        return fig
    ax = fig.axes[0]
    rows = frame.groupby("target_set").mean(numeric_only=True).reindex(_ordered_sets(frame))
    ax.set_xticks(ax.get_xticks(), [f"{s}\nn={int(r.n)}\nr {r.routing:.2f}\nc {r.control:.2f}"
                                    for s, r in rows.iterrows()], fontsize=7)
    return fig
