"""The one figure system of the report: a panel grid of fixed size in inches, one save
helper, one colour per target set, and small multiples (a panel per group). plots.py
(the sweep's results) and analysis_plots.py (why a set wins) both draw through it.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so no global figure registry grows and a notebook's backend is left alone.
"""

import io
import math
import re
import textwrap
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lora_ablate.files import write_atomic
from lora_ablate.labels import GROUP
from lora_ablate.report.ordering import TARGET_ORDER, target_order
from lora_ablate.report.group_labels import group_title

PANELS_PER_FIGURE = 12  # more groups spill into numbered figures, keeping each readable
PANEL = (3.6, 2.5)  # inches
BASELINE_COLOR = "black"  # reference lines (the baseline's mean, zero); no target set uses it
TITLE_LINE_INCHES = 0.2  # height of one more line of the 11 pt figure title
NBSP = "\u00a0"  # holds a formula together while its title is wrapped
Draw = Callable[[Axes, Mapping[str, Any], pd.DataFrame], None]
Group = tuple[dict[str, Any], pd.DataFrame]

# ---------------------------------------------------------------- one colour per target set

# Keyed by the canonical target order (single matrices first, so a matrix kind drawn in
# the analysis figures has the colour of the one-matrix set of that name), then the FFN
# matrices: a set keeps its colour whatever subset of sets a sweep runs.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
            "#7b4173")
_OTHERS = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#6baed6", "#fd8d3c",
           "#74c476", "#9e9ac8", "#969696")
SET_COLORS = dict(zip((*TARGET_ORDER, "ffn_gate", "ffn_up", "ffn_down"), _PALETTE))


def set_color(name: Any) -> str:
    """The colour of target set (or matrix kind) `name`, the same in every figure; a set
    outside the canonical order gets one from its name's checksum (stable across runs)."""
    text = str(name)
    return SET_COLORS.get(text) or _OTHERS[zlib.crc32(text.encode()) % len(_OTHERS)]


# ---------------------------------------------------------------- the panel grid


def panel_grid(n: int, title: str, *, ncols: int = 3, panel: tuple[float, float] = PANEL,
               legend_width: float = 0.0) -> tuple[Figure, list[Axes]]:
    """`n` panels of `panel` inches with fixed margins, a centred title wrapped to the
    figure's width. Fixed inches, not a layout engine: constrained or tight layout
    measures every text twice per save and would dominate the report's run time."""
    n = max(1, n)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    panel_w, panel_h = panel
    gap_w, gap_h = 1.1, 1.6
    left, right, bottom = 0.9, 0.3 + legend_width, 0.9
    width = left + right + ncols * panel_w + (ncols - 1) * gap_w
    # about 12 characters an inch at 11 pt; each extra line of title gets room above the panels
    title = wrap(title, max(20, int(width * 12)))
    top = 1.0 + TITLE_LINE_INCHES * title.count("\n")
    height = top + bottom + nrows * panel_h + (nrows - 1) * gap_h
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.remove()  # no empty frame where the last row is short
    fig.suptitle(title, fontsize=11, y=1 - 0.25 / height, va="top")
    return fig, axes[:n]


def wrap(text: str, width: int) -> str:
    """`text` wrapped to `width` characters, never inside a $…$ formula (mathtext cannot
    span lines)."""
    parts = re.split(r"(\$[^$]*\$)", text)
    glued = "".join(p.replace(" ", NBSP) if p.startswith("$") else p for p in parts)
    return textwrap.fill(glued, width=width).replace(NBSP, " ")


def message_figure(text: str) -> Figure:
    """A small figure that says why there is nothing to draw (e.g. no completed run yet)."""
    fig = Figure(figsize=(6, 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()  # a figure without axes is skipped by IPython's display
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center")
    return fig


def save(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write `fig` as folder/stem.png and .svg (atomically); return both paths."""
    FigureCanvasAgg(fig)
    paths = []
    # SVG text stays text (not glyph paths): smaller, searchable and much faster to write.
    with rc_context({"svg.fonttype": "none"}):
        for fmt, extra in (("png", {"dpi": 100}), ("svg", {"metadata": {"Date": None}})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, **extra)
            paths.append(write_atomic(folder / f"{stem}.{fmt}", buffer.getvalue()))
    return paths


# ---------------------------------------------------------------- panels per group


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the canonical target-set order."""
    return rows.assign(_o=target_order(rows["target_set"])).sort_values(
        ["_o", "target_set"]).drop(columns="_o")


def ordered_sets(frame: pd.DataFrame) -> list[str]:
    """The frame's target sets, in the canonical order."""
    return list(ordered(frame.drop_duplicates("target_set"))["target_set"])


def group_keys(frame: pd.DataFrame, drop: Sequence[str] = ()) -> list[str]:
    """The keys that make a group (a panel) in `frame`: GROUP plus layers when present."""
    return [k for k in dict.fromkeys((*GROUP, "layers")) if k in frame and k not in drop]


def groups(frame: pd.DataFrame, keys: Sequence[str] | None = None) -> list[Group]:
    """(key, rows) per group of `frame`, rows in target-set order."""
    keys = list(group_keys(frame) if keys is None else keys)
    if not keys:
        return [({}, ordered(frame))]
    return [(dict(zip(keys, key)), ordered(rows))
            for key, rows in frame.groupby(keys, sort=True, dropna=False)]


def panel_title(key: Mapping[str, Any], *extra: str) -> str:
    """A group's title over its panel (budget on a second line), `extra` parts after it."""
    title = group_title(key).replace(" · budget", "\nbudget", 1)
    return " · ".join(p for p in (title, *extra) if p)


def shared_legend(fig: Figure, axes: Sequence[Axes], legend_width: float,
                  title: str = "target set") -> None:
    """One legend for all panels (colours are the same in every panel), right of them."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        x = 1 - (legend_width + 0.1) / fig.get_figwidth()
        fig.legend(entries.values(), entries.keys(), loc="center left", bbox_to_anchor=(x, 0.5),
                   fontsize=8, title=title, frameon=False)


def small_multiples(panels: list[Group], title: str, draw: Draw, *, shared: bool = False,
                    per_figure: int | None = PANELS_PER_FIGURE,
                    panel: tuple[float, float] = PANEL, ncols: int = 3) -> list[Figure]:
    """A panel per group drawn by `draw`; `per_figure` panels a figure (None: all in one);
    `shared` puts one legend right of the panels. No groups: no figure."""
    legend_width = 1.4 if shared else 0.0
    size = per_figure or max(1, len(panels))
    figures = []
    for i in range(0, len(panels), size):
        chunk = panels[i:i + size]
        fig, axes = panel_grid(len(chunk), title, ncols=ncols, panel=panel,
                               legend_width=legend_width)
        for ax, (key, rows) in zip(axes, chunk):
            draw(ax, key, rows)
        if shared:
            shared_legend(fig, axes, legend_width)
        figures.append(fig)
    return figures


def clipped_below(mean: Any, low: Any, floor: float = 0.0) -> np.ndarray:
    """Lengths from `mean` down to the interval's lower end, the end raised to `floor`
    where a quantity cannot go below it (a norm ratio, a KL); missing ends draw no bar."""
    mean, low = np.asarray(mean, dtype=float), np.asarray(low, dtype=float)
    return np.nan_to_num(np.clip(mean - np.maximum(low, floor), 0, None))
