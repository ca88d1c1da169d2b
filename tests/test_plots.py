"""Figures from hand-made summaries: one-seed cells, interval choice, the depth figure."""

import numpy as np
import pandas as pd
from matplotlib.container import ErrorbarContainer

from lora_ablate.report.plots import (curve_figures, depth_figures, difference_figures,
                                      means_figures)

GROUP = {"model": "m", "task": "t", "budget": "reference", "budget_scale": 1.0, "variant": ""}


def summary(rows):
    return pd.DataFrame([{**GROUP, "metric": "test/accuracy", "baseline": "qv", **r}
                         for r in rows])


def errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def bar_halves(ax):
    """Half-lengths of the vertical error bars drawn in `ax`."""
    out = []
    for container in errorbars(ax):
        for lines in container.lines[2]:
            for seg in lines.get_segments():
                out.append(abs(seg[1][1] - seg[0][1]) / 2)
    return sorted(round(h, 9) for h in out)


def test_means_draw_seeds_and_no_bar_for_a_single_seed():
    frame = summary([
        {"target_set": "qv", "n": 3, "mean": 0.80, "ci_half": 0.02, "significant": False},
        {"target_set": "q", "n": 1, "mean": 0.75, "ci_half": np.nan, "significant": False},
    ])
    runs = pd.DataFrame([{**GROUP, "status": "completed", "target_set": t, "seed": s,
                          "test/accuracy": v}
                         for t, s, v in (("qv", 0, .78), ("qv", 1, .80), ("qv", 2, .82),
                                         ("q", 0, .75))])
    (fig,) = means_figures(frame, runs)
    ax = fig.axes[0]
    assert bar_halves(ax) == [0.02]  # only qv (n=3) has a bar
    assert any(t.get_text() == "n=1" for t in ax.texts)
    dots = [c for c in ax.collections if c.get_label() == "one seed"]
    assert len(dots[0].get_offsets()) == 4


def test_differences_draw_the_family_interval():
    rows = [{"target_set": "qv", "n": 3, "n_pairs": 3, "mean": .8, "diff": np.nan},
            {"target_set": "q", "n": 3, "n_pairs": 3, "mean": .9, "diff": 0.10,
             "diff_ci_low": 0.05, "diff_ci_high": 0.15, "diff_ci_low_per_comparison": 0.08,
             "diff_ci_high_per_comparison": 0.12, "significant": True}]
    (fig,) = difference_figures(summary(rows))
    segs = [seg for c in errorbars(fig.axes[0]) for lines in c.lines[2]
            for seg in lines.get_segments()]
    assert [tuple(np.round(s[:, 0], 6)) for s in segs] == [(0.05, 0.15)]


def test_curves_use_a_t_interval_over_seeds_and_show_n():
    curves = pd.DataFrame([{**GROUP, "target_set": "qv", "step": step, "mean": 0.7,
                            "std": 0.1, "count": 4} for step in (10, 20)])
    (fig,) = curve_figures(curves)
    ax = fig.axes[0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    half = 3.182446305284263 * 0.1 / 2  # t(0.975, df=3) * std / sqrt(4)
    assert np.isclose(band.max() - 0.7, half) and np.isclose(0.7 - band.min(), half)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["qv (n=4)"]


def test_depth_figure_only_when_layers_vary():
    rows = [{"target_set": t, "layers": band, "n": 3, "mean": m, "ci_half": 0.01}
            for t in ("qv", "ffn") for band, m in (("top", .8), ("bottom", .7), ("all", .75))]
    assert depth_figures(summary([{**r, "layers": "all"} for r in rows[:1]])) == []
    (fig,) = depth_figures(summary(rows))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bottom", "top", "all"]
    assert len(errorbars(ax)) == 2  # a line per target set
    assert bar_halves(ax) == [0.01] * 6
