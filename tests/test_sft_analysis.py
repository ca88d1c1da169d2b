"""The analyses on SFT runs (task.format=sft), tiny_llama from its config: the merge curve's
end points against the run's evaluation and an independent base-model loss, the patching
and shift identities that follow from which matrices are adapted, scored by the completion
tokens, and a run's analysis section as the report draws it."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_run, session_with_random_updates
from test_sft import reference_nll, sft_overrides, write_sums

from lora_ablate.analysis.lora_modules import adapter_weight
from lora_ablate.analysis.merges import scaled_point
from lora_ablate.analysis.probes import attention_patching, shifts
from lora_ablate.analysis.sft_scores import analysis_metric, difference_standard_error, example_scores, metric_value
from lora_ablate.plan.resolve import resolve_run
from lora_ablate.records import RECORD_NAME, ExampleLosses, read_record
from lora_ablate.run.loop import evaluate
from lora_ablate.run.runner import train
from lora_ablate.run.session import prepare


@pytest.fixture(scope="module")
def sums(tmp_path_factory) -> Path:
    return write_sums(tmp_path_factory.mktemp("sft") / "sums.jsonl")


def sft_session(path: Path, targets: str, *, only_layer: int | None = None):
    session, modules, _ = session_with_random_updates(sft_overrides(path, f"targets={targets}"), only_layer=only_layer)
    return session, modules


def base_model_loss(session, items) -> float:
    """NLL per completion token of the model without its adapter: a plain forward with full
    logits and a masked cross-entropy (test_sft.reference_nll)."""
    with torch.no_grad(), session.model.disable_adapter():
        return reference_nll(session.model, items) / sum(item.completion_length for item in items)


def test_merge_curve_end_points_are_the_evaluation_and_the_base_model(sums):
    session, modules = sft_session(sums, "qv")
    items = session.test_items
    evaluated = evaluate(session, items, "test").metrics
    one = scaled_point(session, modules, items, 1.0)
    assert metric_value(one.losses, "loss") == pytest.approx(evaluated["test/loss"], rel=1e-6)
    assert metric_value(one.losses, "token_accuracy") == pytest.approx(evaluated["test/token_accuracy"])
    assert one.merge_max_abs_diff < 1e-4 and one.predicted == []
    zero = scaled_point(session, modules, items, 0.0)
    base = base_model_loss(session, items)
    assert metric_value(zero.losses, "loss") == pytest.approx(base, rel=1e-5)
    assert abs(base - evaluated["test/loss"]) > 1e-3  # the update does change the loss
    assert zero.merge_max_abs_diff == 0.0


@pytest.mark.parametrize("targets, same_as", [("q", "base"), ("v", "full")])
def test_patching_identities_on_completion_losses(sums, targets, same_as):
    """Only the last layer adapted: with `q` the only change is that layer's attention, so
    patching the base model's attention in recovers the base loss of every example; with `v`
    attention never changes, so patching changes nothing."""
    session, modules = sft_session(sums, targets, only_layer=1)
    items = session.test_items
    patch = attention_patching(session, modules, items)
    assert patch.available and patch.probe_max_abs_diff < 1e-4
    full = example_scores(session, items)[0]
    with adapter_weight(modules, 0.0):
        base = example_scores(session, items)[0]
    assert not np.allclose(base.nll, full.nll, rtol=1e-4)
    assert np.allclose(patch.base.nll, base.nll, rtol=1e-5)
    assert np.allclose(patch.patched.nll, (base if same_as == "base" else full).nll, rtol=1e-5)
    assert patch.patched.tokens == full.tokens == [item.completion_length for item in items]


def test_shifts_need_no_labels_and_follow_from_the_adapted_matrices(sums):
    session, modules = sft_session(sums, "v")
    v_only = shifts(session, modules, session.test_items)
    assert v_only.attention[0] == 0.0  # V does not enter layer 0's attention probabilities
    assert v_only.attention[1] > 0  # but layer 1's inputs changed
    assert all(value > 0 for value in v_only.content.values())


def test_the_difference_standard_error_is_the_paired_one_for_single_tokens():
    base = ExampleLosses([1.0, 2.0, 3.0, 4.0], [1, 1, 1, 1], [0, 1, 1, 0])
    full = ExampleLosses([0.5, 1.9, 2.0, 3.8], [1, 1, 1, 1], [1, 1, 1, 0])
    d = np.array(full.nll) - np.array(base.nll)
    assert difference_standard_error(full, base, "loss") == pytest.approx(d.std(ddof=1) / math.sqrt(4))
    assert metric_value(full, "token_accuracy") == 0.75
    # token-weighted: the per-example sums over all tokens, not a mean of per-example means
    longer = ExampleLosses([1.0, 9.0], [1, 3], [1, 0])
    assert metric_value(longer, "loss") == pytest.approx(10 / 4)
    assert [analysis_metric(m) for m in ("loss", "token_accuracy", "exact_match")] == ["loss", "token_accuracy", "loss"]


def test_an_sft_run_records_its_analysis_and_the_report_draws_it(sums, tmp_path):
    from lora_ablate.report import analysis_frames, analysis_plots
    from lora_ablate.report.render import write_report

    args = sft_overrides(sums, "targets=qv", "train.max_steps=3", "train.batch_size=4", "train.lr=0.01",
                         "analysis.merge_weights=[0,0.5,1]", "analysis.probe_size=4")
    cfg = compose_run(args)
    train(cfg, run_dir=tmp_path / "qv", overrides=args)
    raw = json.loads((tmp_path / "qv" / RECORD_NAME).read_text())
    record = read_record(tmp_path / "qv" / RECORD_NAME).record
    analysis = record.analysis
    assert analysis.error is None and analysis.task_format == "sft" and raw["analysis"]["task_format"] == "sft"
    assert [m.name for m in analysis.modules] == [m.name for m in record.plan.modules]
    assert (tmp_path / "qv" / "analysis.safetensors").is_file() and record.cost.analysis_seconds > 0
    curve = analysis.merge_curve
    assert curve.metric == "loss" and curve.higher_is_better is False and curve.weights == [0.0, 0.5, 1.0]
    # s=1: the run's own test evaluation (every test example is in the analysis subset)
    assert analysis.eval_size == len(record.example_losses["test"].nll) == 8
    assert curve.values[2] == pytest.approx(record.metrics["test/loss"], rel=1e-12)
    # s=0: the base model's loss, computed here from a fresh, untrained copy (LoRA B = 0)
    fresh = prepare(cfg, resolve_run(cfg), torch.device("cpu"))
    assert curve.values[0] == pytest.approx(base_model_loss(fresh, fresh.test_items), rel=1e-5)
    assert curve.values[2] < curve.values[0]  # training lowered the loss
    patching = analysis.patching
    assert patching.metric == "loss" and patching.higher_is_better is False
    assert patching.base == curve.values[0] and patching.full == curve.values[2] and patching.gain < 0
    assert len(analysis.attention_shift) == 2

    frame = analysis_frames.merge_curve_frame([record])
    figure = analysis_plots.plot_merge_curve(frame)
    assert figure.axes[0].get_ylabel() == "loss (lower is better)"
    out = write_report(tmp_path)
    assert (out / "figures" / "merge_curve.png").is_file() and (out / "figures" / "attention_share.png").is_file()
    assert "the gain in loss is its drop, lower being better" in (out / "report.md").read_text()


def test_a_version_1_curve_reads_its_direction_from_the_metric_name():
    from lora_ablate.record_analysis import Analysis
    from lora_ablate.records import Labels, Plan, RunRecord, Status
    from lora_ablate.report import analysis_frames, analysis_plots

    section = {"version": 1, "merge_curve": {"metric": "accuracy", "weights": [0.0, 1.0], "values": [0.5, 0.8],
                                             "merge_max_abs_diff": None}}
    analysis = Analysis.from_dict(section)
    assert analysis.merge_curve.higher_is_better is None and analysis.task_format is None
    assert analysis.merge_curve.to_dict() == section["merge_curve"]  # written back as it was read
    record = RunRecord(status=Status.completed, run_id="r", labels=Labels("minilm", "sst2", "qv", "reference", seed=0),
                       config={}, config_hash="h", plan=Plan(target_set="qv", targets=["q", "v"]), analysis=analysis)
    figure = analysis_plots.plot_merge_curve(analysis_frames.merge_curve_frame([record]))
    assert figure.axes[0].get_ylabel() == "accuracy (higher is better)"
