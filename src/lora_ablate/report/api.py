"""The analysis API behind `lora_ablate`'s top-level names: plots of a sweep that return a
matplotlib Figure (nothing written, nothing shown; a notebook displays it).

    sweep = load_sweep("outputs/sweeps/qv_vs_others")
    plot_means(sweep)                # every seed, the means and their intervals
    plot_curves(sweep)               # validation curves with t-intervals over seeds
"""

import pandas as pd
from matplotlib.figure import Figure

from lora_ablate.report import plots
from lora_ablate.report.sweep import Sweep, curves, summarize


def _summary(sweep: Sweep, summary: pd.DataFrame | None, metric: str | None,
             baseline: str, confidence: float) -> pd.DataFrame:
    if summary is not None:
        return summary
    return summarize(sweep, metric=metric, baseline=baseline, confidence=confidence)


def _one(figures: list[Figure], why: str) -> Figure:
    return figures[0] if figures else plots.message_figure(why)


def plot_means(sweep: Sweep, summary: pd.DataFrame | None = None, *, metric: str | None = None,
               baseline: str = "qv", confidence: float = 0.95) -> Figure:
    """Per group: each seed's value, the mean per target set and its t-interval over seeds."""
    summary = _summary(sweep, summary, metric, baseline, confidence)
    return _one(plots.means_figures(summary, sweep.runs, baseline=baseline,
                                    confidence=confidence, per_figure=None),
                "No completed run with the metric yet.")


def plot_differences(sweep: Sweep, summary: pd.DataFrame | None = None, *,
                     metric: str | None = None, baseline: str = "qv",
                     confidence: float = 0.95) -> Figure:
    """Difference of each target set to the baseline with its interval (a forest plot)."""
    summary = _summary(sweep, summary, metric, baseline, confidence)
    return _one(plots.difference_figures(summary, baseline=baseline, confidence=confidence,
                                         per_figure=None),
                f"No target set shares seeds with the baseline {baseline} yet.")


def plot_curves(sweep: Sweep, *, metric: str | None = None, baseline: str = "qv",
                confidence: float = 0.95) -> Figure:
    """Validation curves: mean over seeds per target set with its t-interval."""
    return _one(plots.curve_figures(curves(sweep, metric), baseline=baseline,
                                    confidence=confidence, per_figure=None),
                "No completed run with a validation history yet.")


def plot_depth(sweep: Sweep, summary: pd.DataFrame | None = None, *, metric: str | None = None,
               baseline: str = "qv", confidence: float = 0.95) -> Figure:
    """Metric by layer band (bottom/middle/top/all) per target set, when layers vary."""
    summary = _summary(sweep, summary, metric, baseline, confidence)
    return _one(plots.depth_figures(summary, baseline=baseline, confidence=confidence,
                                    per_figure=None),
                "The sweep does not vary targets.layers: no depth figure.")
