"""The report's "why" figures: the analysis frames of the sweep's completed runs drawn by
analysis_plots, by stem, with captions that say what each shows and what it averages over."""

from matplotlib.figure import Figure

from lora_ablate.report import analysis_frames as frames
from lora_ablate.report import analysis_plots as plots
from lora_ablate.report.sweep import Sweep

CAPTIONS = {
    "update_norms": "Relative update norm ‖ΔW‖_F/‖W‖_F by matrix kind and layer (LoRA paper §7): "
                    "mean with its t-interval over seeds.",
    "amplification": "Amplification ‖ΔW‖_F/‖UᵀWV‖_F by matrix kind (how far ΔW boosts directions "
                     "W under-uses): mean with its t-interval over seeds.",
    "seed_similarity": "Subspace similarity φ between the top singular directions of two seeds' ΔW "
                       "for the baseline target set, mean over layers (1: same subspace).",
    "shifts": "Attention shift (mean KL of attention maps, adapted vs base) against content shift "
              "(relative change of the adapted modules' outputs) per target set, on the probe set.",
    "attention_share": "Share of the gain over the base model with the trained head that is lost "
                       "when the base model's attention maps are patched in: the part carried by "
                       "re-routing attention. Mean with its t-interval over seeds.",
    "merge_curve": "Test metric with the adapter scaled by s and merged, on the analysis subset of "
                   "test examples: mean with its t-interval over seeds (s=1 is the run's own "
                   "evaluation; s=0 the base model with the trained head).",
    "routing_gap": "diag_routing minus diag_control test metric per target set, paired by seed, "
                   "with its t-interval over seeds.",
}


def analysis_figures(sweep: Sweep, *, baseline: str, confidence: float) -> dict[str, list[Figure]]:
    """Every analysis figure the sweep's records support (none when analysis was off)."""
    kept = [sweep.records[i] for i in sweep.runs.index if sweep.runs.at[i, "status"] == "completed"]
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
        built = {stem: [plot(frame)] for stem, (frame, plot) in drawn.items() if len(frame)}
    routing = frames.routing_gap_frame([item.record for item in kept if item.record is not None])
    if len(routing):
        built["routing_gap"] = [plots.plot_routing_gap(routing)]
    return built


def mechanism_sentence(sweep: Sweep, *, confidence: float) -> str | None:
    """What attention patching says about "Q decides where the model looks, V what it
    retrieves", in one sentence formatted from the attention-share frame; None without it."""
    kept = [sweep.records[i] for i in sweep.runs.index if sweep.runs.at[i, "status"] == "completed"]
    share = frames.attention_share_frame(frames.analysed_runs(kept), confidence)
    if share.empty:
        return None
    kinds = share["target_set"].map(_kind)
    parts = [f"{row.target_set} {row['mean']:.0%} (n={row.n})" for _, row in share.iterrows()]
    text = ("Share of each target set's gain carried by re-routing attention (attention patching; "
            f"mean over seeds): {', '.join(parts)}. Sets that adapt only q and k act through the "
            "attention maps alone, so their share is 100 % by construction.")
    mixed = share.loc[kinds.eq("mixed"), "mean"]
    if len(mixed):
        where = "re-routing attention" if mixed.mean() > 0.5 else "changed content (v, o, FFN)"
        text += (f" Where a set can change both where the model looks (q, k) and what it retrieves "
                 f"(v, o, FFN), re-routing carries {mixed.mean():.0%} of the gain on average "
                 f"({', '.join(share.loc[kinds.eq('mixed'), 'target_set'])}): on this model and task "
                 f"the improvement comes mostly through {where} (means over seeds, not a test).")
    return text


def _kind(target_set: str) -> str:
    """routing (only q/k), content (no q/k) or mixed."""
    matrices = set(_matrices(target_set))
    routing = matrices & {"q", "k"}
    return "routing" if routing == matrices else "mixed" if routing else "content"


def _matrices(target_set: str) -> list[str]:
    """The matrices a target-set label names (qkv_ffn -> q, k, v, ffn; q+v+ffn_down -> q, v, ffn_down)."""
    if target_set == "all":
        return ["q", "k", "v", "o", "ffn"]
    if "+" in target_set:
        return target_set.split("+")
    head, _, rest = target_set.partition("_")
    return [*head] + ([rest] if rest else []) if set(head) <= set("qkvo") else [target_set]
