"""The report's "why" figures: the analysis frames of the sweep's completed runs drawn by
analysis_plots, by stem, with captions that say what each shows and what it averages over."""

from collections.abc import Callable, Iterable

import pandas as pd
from matplotlib.figure import Figure

from lora_ablate.records import LoadedRecord, Status
from lora_ablate.report import analysis_frames as frames
from lora_ablate.report import analysis_plots as plots
from lora_ablate.report.sweep import Sweep

CAPTIONS = {
    "update_norms": "Relative update norm ‖ΔW‖/‖W‖ (Frobenius norms) by matrix kind and layer "
                    "(LoRA paper §7), a panel per group and target set: mean with its t-interval "
                    "over seeds, its lower end clipped at 0 (a norm ratio cannot be negative).",
    "amplification": "Amplification ‖ΔW‖/‖UᵀWV‖ (Frobenius norms) by matrix kind (how far ΔW "
                     "boosts directions W under-uses): mean with its t-interval over seeds, its "
                     "lower end clipped at 0 (a norm ratio cannot be negative).",
    "seed_similarity": "Subspace similarity φ between the top singular directions of two seeds' ΔW "
                       "for the baseline target set, mean over layers (1: same subspace).",
    "shifts": "Attention shift (mean KL of attention maps, adapted vs base) against content shift "
              "(relative change of the adapted modules' outputs) per target set, on the probe set: "
              "means with their t-intervals over seeds, lower ends clipped at 0 (neither can be "
              "negative).",
    "attention_share": "Share of the gain over the base model (with the trained head on classification "
                       "tasks) that is lost when the base model's attention maps are patched in: the "
                       "part carried by re-routing attention. Mean with its t-interval over seeds. On "
                       "an SFT task the gain is the drop in the completion tokens' loss; the share is "
                       "a ratio of differences, so it reads the same way.",
    "merge_curve": "Test metric with the adapter scaled by s and merged, on the analysis subset of "
                   "test examples: mean with its t-interval over seeds (s=1 is the run's own "
                   "evaluation; s=0 the base model, with the trained head on classification tasks). "
                   "The axis says which way is better: an SFT task's curve is its completion tokens' "
                   "loss, lower is better.",
    "routing_gap": "diag_routing minus diag_control test accuracy per target set, paired by "
                   "seed, with its t-interval over seeds; the routing and control means beside "
                   "each bar (a gap means little where routing itself stays at chance, 0.50).",
}


def analysis_figures(sweep: Sweep, *, baseline: str, confidence: float,
                     relabel: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame
                     ) -> dict[str, list[Figure]]:
    """Every analysis figure the sweep's records support (none when analysis was off);
    `relabel` gives each frame the group labels the report shows."""
    kept = _completed(sweep)
    runs = frames.analysed_runs(kept)
    built: dict[str, list[Figure]] = {}
    if runs:
        drawn = {
            "update_norms": (frames.relative_norm_frame(runs, confidence), plots.plot_relative_norm),
            "amplification": (frames.amplification_frame(runs, confidence), plots.plot_amplification),
            "seed_similarity": (frames.seed_similarity_frame(runs, baseline), plots.plot_seed_similarity),
            "shifts": (frames.shift_summary_frame(runs, confidence), plots.plot_shifts),
            "attention_share": (frames.attention_share_frame(runs, confidence), plots.plot_attention_share),
            "merge_curve": (frames.merge_curve_frame(runs, confidence), plots.plot_merge_curve),
        }
        built = {stem: [plot(relabel(frame))] for stem, (frame, plot) in drawn.items() if len(frame)}
    routing = frames.routing_gap_frame([item.record for item in kept if item.record is not None])
    if len(routing):
        built["routing_gap"] = [plots.plot_routing_gap(relabel(routing))]
    return built


def mechanism_sentence(sweep: Sweep, *, confidence: float) -> str | None:
    """What attention patching says about "Q decides where the model looks, V what it
    retrieves", in one sentence formatted from the attention-share frame; None without it."""
    kept = _completed(sweep)
    share = frames.attention_share_frame(frames.analysed_runs(kept), confidence)
    if share.empty:
        return None
    kinds = share["target_set"].map(_kinds(kept))
    parts = [f"{row.target_set} {row['mean']:.0%} (n={row.n})" for _, row in share.iterrows()]
    text = ("Share of each target set's gain carried by re-routing attention (attention patching; "
            f"mean over seeds{_gain_meaning(kept)}): {', '.join(parts)}. Sets that adapt only q and k "
            "act through the attention maps alone, so their share is 100 % by construction.")
    mixed = share.loc[kinds.eq("mixed"), "mean"]
    if len(mixed):
        where = "re-routing attention" if mixed.mean() > 0.5 else "changed content (v, o, FFN)"
        text += (f" Where a set can change both where the model looks (q, k) and what it retrieves "
                 f"(v, o, FFN), re-routing carries {mixed.mean():.0%} of the gain on average "
                 f"({', '.join(share.loc[kinds.eq('mixed'), 'target_set'])}): on this model and task "
                 f"the improvement comes mostly through {where} (means over seeds, not a test).")
    return text


def _gain_meaning(loaded: Iterable[LoadedRecord]) -> str:
    """"; the gain in loss is its drop" where patching scored a lower-is-better metric (an SFT loss)."""
    lower = sorted({str(p.metric) for item in loaded if item.record is not None and item.record.analysis
                    for p in [item.record.analysis.patching] if p is not None and p.available and p.metric
                    and p.higher_is_better is False})
    return f"; the gain in {', '.join(lower)} is its drop, lower being better" if lower else ""


DIAGNOSTIC_CHANCE = 0.5  # diag_routing and diag_control are balanced two-class tasks


def routing_sentence(sweep: Sweep, *, confidence: float) -> str | None:
    """The diagnostic tasks' result in words, formatted from routing_gap_frame: the gap
    per target set with its interval, whether any set learns routing at all (its routing
    interval above chance), and the mean gap of sets with and without q/k. None when the
    sweep has no paired diag_routing and diag_control runs."""
    kept = _completed(sweep)
    gap = frames.routing_gap_frame([item.record for item in kept if item.record is not None],
                                   confidence=confidence)
    if gap.empty:
        return None
    parts = [f"{row.target_set} {row['mean']:+.3f} {_interval_text(row.ci_low, row.ci_high, row.n, '+.3f')}"
             for _, row in gap.iterrows()]
    text = (f"Diagnostic tasks (test accuracy, chance {DIAGNOSTIC_CHANCE:.2f}): diag_routing minus "
            f"diag_control per target set, paired by seed, mean with its {confidence:.0%} "
            f"t-interval over seeds: {', '.join(parts)}.")
    learned = gap[gap["routing_ci_low"] > DIAGNOSTIC_CHANCE]
    best = gap.loc[gap["routing"].idxmax()]
    best_text = (f"best {best.target_set} {best.routing:.3f} "
                 f"{_interval_text(best.routing_ci_low, best.routing_ci_high, best.n, '.3f')}")
    if learned.empty:
        return text + (f" No target set learns the routing task (no routing interval lies above "
                       f"chance; {best_text}), so the gaps say nothing about re-routing.")
    text += (f" {len(learned)} of {len(gap)} target sets learn the routing task (routing interval "
             f"above chance; {best_text}).")
    kinds = gap["target_set"].map(_kinds(kept))
    moves = gap.loc[kinds.isin(["routing", "mixed"]), "mean"]
    reads = gap.loc[kinds.eq("content"), "mean"]
    if len(moves) and len(reads):
        text += (f" Mean gap of the sets that adapt q or k: {moves.mean():+.3f} ({_sets(len(moves))}); "
                 f"of the sets that adapt neither: {reads.mean():+.3f} ({_sets(len(reads))}), a "
                 f"mean over target sets, not a test. If q and k are what moves attention, the "
                 f"first is the larger.")
    return text


def _interval_text(low: float, high: float, n: int, spec: str) -> str:
    """"[low, high] (n=3)", or "(n=1, no interval)" where one seed gives none."""
    if n < 2:
        return f"(n={n}, no interval)"
    return f"[{low:{spec}}, {high:{spec}}] (n={n})"


def _sets(n: int) -> str:
    return f"{n} set" if n == 1 else f"{n} sets"


def _completed(sweep: Sweep) -> list[LoadedRecord]:
    return [sweep.records[i] for i in sweep.runs.index if sweep.runs.at[i, "status"] == Status.completed]


def _kinds(loaded: Iterable[LoadedRecord]) -> dict[str, str | None]:
    """The kind of each target set, from the matrices its runs' plans adapted."""
    return {item.record.labels.target_set: _kind(item.record.plan.targets)
            for item in loaded if item.record is not None and item.record.plan.targets}


def _kind(matrices: Iterable[str]) -> str | None:
    """routing (only q/k), content (no q/k) or mixed; None for no matrices."""
    adapted = set(matrices)
    if not adapted:
        return None
    routing = adapted & {"q", "k"}
    return "routing" if routing == adapted else "mixed" if routing else "content"
