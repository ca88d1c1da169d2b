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


def line_colors(fig):
    """label -> colour of every labelled line in the figure's panels."""
    from matplotlib.colors import to_hex

    return {line.get_label().split(" ")[0]: to_hex(line.get_color())
            for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_a_target_set_has_one_colour_in_every_figure():
    from matplotlib.colors import to_hex

    from lora_ablate.report import analysis_plots

    two = pd.DataFrame([{**GROUP, "target_set": t, "step": step, "mean": 0.7, "std": 0.1,
                         "count": 3} for t in ("qv", "q") for step in (10, 20)])
    three = pd.DataFrame([{**GROUP, "target_set": t, "step": step, "mean": 0.7, "std": 0.1,
                           "count": 3} for t in ("all", "q", "ffn", "qv") for step in (10, 20)])
    merge = pd.DataFrame([{**GROUP, "metric": "test/accuracy", "target_set": t, "weight": w,
                           "mean": 0.7, "ci_low": 0.6, "ci_high": 0.8}
                          for t in ("q", "all") for w in (0.0, 1.0)])
    (small,), (large,) = curve_figures(two), curve_figures(three)
    merged = analysis_plots.plot_merge_curve(merge)
    first, second, third = line_colors(small), line_colors(large), line_colors(merged)
    assert first["q"] == second["q"] == third["q"]
    assert second["all"] == third["all"] and first["qv"] == second["qv"]
    assert len(set(second.values())) == 4  # distinct sets, distinct colours
    bands = [to_hex(c.get_facecolor()[0]) for c in small.axes[0].collections]
    assert bands == [first["q"], first["qv"]]  # each band in its line's colour, canonical order
    rows = [{"target_set": t, "n": 3, "mean": .8, "ci_half": .01} for t in ("q", "qv")]
    (means,) = means_figures(summary(rows))
    dots = {to_hex(c.lines[0].get_color()) for c in errorbars(means.axes[0])}
    assert dots == {first["q"], first["qv"]}


def test_curves_leave_out_cells_and_panels_with_one_validation_point():
    def curves(task, steps):
        return [{**GROUP, "task": task, "target_set": t, "step": s, "mean": 0.7, "std": 0.1,
                 "count": 3} for t in ("qv", "q") for s in steps]

    only_final = pd.DataFrame(curves("t", [200]))  # eval_every=0: the final evaluation only
    assert curve_figures(only_final) == []
    (fig,) = curve_figures(pd.DataFrame(curves("t", [200]) + curves("u", [100, 200])))
    assert len(fig.axes) == 1 and "u" in fig.axes[0].get_title()


def test_intervals_of_non_negative_quantities_stop_at_zero_and_norms_render():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lora_ablate.report import analysis_plots

    norms = pd.DataFrame([{**GROUP, "target_set": "qv", "matrix": m, "layer": layer,
                           "mean": 0.01, "ci_low": -0.02, "ci_high": 0.04, "n": 2}
                          for m in ("q", "v") for layer in (0, 1)])
    shifts = pd.DataFrame([{**GROUP, "target_set": "qv", "mean_content": 0.05,
                            "ci_low_content": -0.1, "ci_high_content": 0.2,
                            "mean_attention": 0.01, "ci_low_attention": -0.03,
                            "ci_high_attention": 0.05}])
    amp = norms.drop(columns="layer").drop_duplicates("matrix")
    for fig in (analysis_plots.plot_relative_norm(norms), analysis_plots.plot_shifts(shifts),
                analysis_plots.plot_amplification(amp)):
        FigureCanvasAgg(fig).draw()
        # each bar's extent along its own direction (vertical: y, horizontal: x)
        ends = [seg[:, 1] if seg[0, 0] == seg[1, 0] else seg[:, 0] for ax in fig.axes
                for c in errorbars(ax) for lines in c.lines[2] for seg in lines.get_segments()]
        assert ends and min(e.min() for e in ends) == 0.0, fig.get_suptitle()
        assert max(e.max() for e in ends) > 0.03  # the upper ends are kept
        assert fig.get_suptitle().count("$") % 2 == 0 and all(
            line.count("$") % 2 == 0 for line in fig.get_suptitle().splitlines())
        texts = [fig.get_suptitle(), *(ax.get_ylabel() for ax in fig.axes)]
        assert not any("‖ΔW‖_F" in t for t in texts)  # mathtext, not its source as text
    assert r"$\Vert\Delta W\Vert_F" in analysis_plots.plot_relative_norm(norms).axes[0].get_ylabel()
