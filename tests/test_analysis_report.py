"""Report-side frames and figures of the analysis (no torch): subspace similarity against
hand-made subspaces, aggregation of synthetic records, the routing gap paired by seed."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from safetensors.numpy import save_file

from lora_ablate.record_analysis import Analysis, MergeCurve, ModuleAnalysis, Patching
from lora_ablate.records import Labels, Plan, RunRecord, Status
from lora_ablate.report import analysis_frames as af
from lora_ablate.report import analysis_plots as ap


def test_subspace_similarity_of_known_subspaces():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(20, 6)))
    same = af.subspace_similarity(q[:, :3], q[:, :3])
    assert np.allclose(np.diag(same), 1.0)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = af.subspace_similarity(q[:, :3], q[:, :3] @ rotation)
    assert rotated[2, 2] == pytest.approx(1.0)  # the same 3-dimensional subspace, other basis
    assert af.subspace_similarity(q[:, :3], q[:, 3:6])[2, 2] == pytest.approx(0.0, abs=1e-12)
    # φ(1, 2): first column of a against two of b: ‖a1ᵀ[b1 b2]‖² / 1
    b = np.stack([q[:, 0] * 0.6 + q[:, 1] * 0.8, q[:, 2]], axis=1)
    assert af.subspace_similarity(q[:, :1], b)[0, 1] == pytest.approx(0.36)


def record(task: str, target_set: str, seed: int, accuracy: float, *, share=None, layers=2) -> RunRecord:
    modules = [ModuleAnalysis(f"l{l}.{m}", m, l, 2, singular_values=[0.2, 0.1], relative_norm=0.01 * (l + 1),
                              effective_rank=1.8, amplification=2.0 + seed, content_shift=0.1)
               for l in range(layers) for m in target_set]
    analysis = Analysis(modules=modules, attention_shift=[0.0, 0.02 * (seed + 1)],
                        patching=Patching(True, attention_share=share,
                                          surviving_share=None if share is None else 1 - share, gain=0.1),
                        merge_curve=MergeCurve("accuracy", [0.0, 1.0], [0.5, accuracy]))
    return RunRecord(status=Status.completed, run_id=f"{task}-{target_set}-{seed}",
                     labels=Labels("minilm", task, target_set, "reference", seed=seed), config={}, config_hash="h",
                     plan=Plan(target_set=target_set, targets=list(target_set)), metrics={"test/accuracy": accuracy},
                     analysis=analysis)


def test_routing_gap_is_paired_by_seed():
    records = [record("diag_routing", "qk", s, 0.70 + 0.01 * s) for s in range(3)]
    records += [record("diag_control", "qk", s, 0.60 + 0.02 * s) for s in range(3)]
    records += [record("diag_routing", "v", 0, 0.65), record("diag_control", "v", 1, 0.6)]  # no pair
    gap = af.routing_gap_frame(records)
    row = gap[gap["target_set"] == "qk"].iloc[0]
    diffs = np.array([0.10, 0.09, 0.08])
    assert row["n"] == 3 and row["mean"] == pytest.approx(diffs.mean())
    half = 4.302652729911275 * diffs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert "v" not in set(gap["target_set"])
    assert row["routing"] == pytest.approx(0.71) and row["control"] == pytest.approx(0.62)
    routing = np.array([0.70, 0.71, 0.72])
    assert row["routing_ci_low"] == pytest.approx(0.71 - 4.302652729911275 * routing.std(ddof=1) / math.sqrt(3))
    assert isinstance(ap.plot_routing_gap(gap), Figure)


def test_frames_aggregate_over_seeds():
    runs = [record("rt", "qv", s, 0.8, share=0.2 * s if s else None) for s in range(3)]
    norms = af.relative_norm_frame(runs)
    assert set(norms["matrix"]) == {"q", "v"} and norms["n"].eq(3).all()
    assert norms.loc[norms["layer"] == 1, "mean"].tolist() == pytest.approx([0.02, 0.02])
    amp = af.amplification_frame(runs)
    assert amp["mean"].tolist() == pytest.approx([3.0, 3.0])  # (2 + 3 + 4) / 3
    share = af.attention_share_frame(runs).iloc[0]
    assert share["n"] == 2 and share["n_undefined"] == 1 and share["mean"] == pytest.approx(0.3)
    shifts = af.shift_summary_frame(runs).iloc[0]
    assert shifts["mean_attention"] == pytest.approx(np.mean([0.01, 0.02, 0.03]))
    curve = af.merge_curve_frame(runs)
    assert curve["weight"].tolist() == [0.0, 1.0] and curve["mean"].tolist() == pytest.approx([0.5, 0.8])
    for figure in (ap.plot_relative_norm(norms), ap.plot_amplification(amp), ap.plot_shifts(af.shift_summary_frame(runs)),
                   ap.plot_attention_share(af.attention_share_frame(runs)), ap.plot_merge_curve(curve),
                   ap.plot_seed_similarity(pd.DataFrame()), ap.plot_routing_gap(af.routing_gap_frame([]))):
        assert isinstance(figure, Figure)
        figure.savefig(__import__("io").BytesIO(), format="png")


def test_seed_similarity_reads_the_vectors(tmp_path):
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(16, 4)))
    runs = []
    for seed in range(3):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        rec = record("rt", "qv", seed, 0.8, layers=1)
        vectors = {}
        for m in rec.analysis.modules:  # q: the same subspace every seed; v: disjoint ones
            basis = q[:, :2] if m.matrix == "q" else np.linalg.qr(rng.normal(size=(16, 2)))[0]
            vectors[f"{m.name}.right"] = basis.astype(np.float16)
            vectors[f"{m.name}.left"] = basis.astype(np.float16)
        save_file(vectors, str(folder / af.VECTORS_NAME))
        runs.append((rec, folder))
    frame = af.seed_similarity_frame(runs, "qv")
    q_phi = frame[(frame["matrix"] == "q") & (frame["i"] == 2) & (frame["j"] == 2)].iloc[0]
    assert q_phi["pairs"] == 3 and q_phi["phi"] == pytest.approx(1.0, abs=1e-3)
    v_phi = frame[(frame["matrix"] == "v") & (frame["i"] == 2) & (frame["j"] == 2)].iloc[0]["phi"]
    assert v_phi < 0.9
    assert isinstance(ap.plot_seed_similarity(frame), Figure)


def test_target_sets_are_sorted_into_routing_content_and_mixed():
    from lora_ablate.report.analysis_section import _kind

    sets = {"q": ["q"], "qk": ["q", "k"], "v": ["v"], "ffn": ["ffn_up", "ffn_down"], "qv": ["q", "v"],
            "qkv_ffn": ["q", "k", "v", "ffn_gate", "ffn_up", "ffn_down"], "q+ffn_down": ["q", "ffn_down"],
            "unknown": []}
    kinds = {name: _kind(matrices) for name, matrices in sets.items()}
    assert kinds == {"q": "routing", "qk": "routing", "v": "content", "ffn": "content", "qv": "mixed",
                     "qkv_ffn": "mixed", "q+ffn_down": "mixed", "unknown": None}


def test_routing_sentence_states_gaps_intervals_and_whether_routing_is_learned(tmp_path):
    from lora_ablate.records import write_record
    from lora_ablate.report.analysis_section import routing_sentence
    from lora_ablate.report.sweep import load_sweep

    def write(records):
        for r in records:
            write_record(tmp_path / f"{r.labels.task}-{r.labels.target_set}-{r.labels.seed}", r)
        return load_sweep(tmp_path)

    chance = [record(t, s, seed, 0.5 + 0.002 * seed) for t in ("diag_routing", "diag_control")
              for s in ("qk", "v") for seed in range(3)]
    text = routing_sentence(write(chance), confidence=0.95)
    assert "No target set learns the routing task" in text and "say nothing" in text

    learned = [record("diag_routing", "qk", s, 0.70 + 0.01 * s) for s in range(3)]
    learned += [record("diag_control", "qk", s, 0.60 + 0.02 * s) for s in range(3)]
    text = routing_sentence(write(learned), confidence=0.95)
    gaps = np.array([0.10, 0.09, 0.08])
    half = 4.302652729911275 * gaps.std(ddof=1) / math.sqrt(3)
    assert f"qk {gaps.mean():+.3f} [{gaps.mean() - half:+.3f}, {gaps.mean() + half:+.3f}] (n=3)" in text
    assert "1 of 2 target sets learn the routing task" in text and "best qk 0.710 [" in text
    # v (content only) has gap 0 and qk (q and k only) 0.09: both means are stated
    assert "sets that adapt q or k: +0.090 (1 set)" in text and "adapt neither: +0.000 (1 set)" in text

    one_seed = [record("diag_routing", "o", 0, 0.55), record("diag_control", "o", 0, 0.6)]
    text = routing_sentence(write(one_seed), confidence=0.95)
    assert "o -0.050 (n=1, no interval)" in text and "nan" not in text


def test_bars_draw_a_panel_per_group_each_with_its_own_interval():
    # one task with three seeds (an interval), one with one seed (none): a panel each, not
    # a pooled bar whose averaged interval ends are no interval
    runs = [record("rt", "qv", s, 0.8, share=0.9 + 0.01 * s) for s in range(3)]
    runs += [record("diag_routing", "qv", 0, 0.6, share=0.1)]
    frame = af.attention_share_frame(runs)
    assert len(frame) == 2
    figure = ap.plot_attention_share(frame)
    from matplotlib.container import BarContainer

    heights = {}
    for ax in figure.axes:
        (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
        (segment,) = bars.errorbar.lines[2][0].get_segments()
        heights[ax.get_title().splitlines()[0].split(" · ")[1]] = (bars.patches[0].get_height(), np.ptp(segment[:, 1]))
    assert heights["rt"][0] == pytest.approx(0.91) and heights["rt"][1] > 0
    assert heights["diag_routing"] == pytest.approx((0.1, 0.0))  # one seed: a zero-length bar
    figure.canvas.draw()
