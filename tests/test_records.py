"""The run record type: written, read and faked through one class; older records load;
a completed record is never overwritten; NaN never reaches the JSON."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from lora_ablate.record_analysis import Analysis, MergeCurve, ModuleAnalysis, Patching
from lora_ablate.record_plan import Module, PlanBudget
from lora_ablate.records import (
    RECORD_NAME, SCHEMA_VERSION, Cost, Identity, Labels, ModelIdentity, Plan, Provenance, RecordError, RunRecord,
    SplitPredictions, Status, completed_record, find_records, read_record, write_record,
)

DATA = Path(__file__).parent / "data"
V2_RECORDS = sorted(DATA.glob("record_v2_*.json"))  # written by the code before version 3


def record(status: str = "completed", config_hash: str = "aaaa", accuracy: float = 0.8, **extra) -> RunRecord:
    fields = dict(labels=Labels(model="m", task="t", target_set="qv", budget="reference", seed=0),
                  plan=Plan(lora_params=10)) | extra
    return RunRecord(
        status=status, run_id="model=m,task=t,targets=qv,budget=reference,seed=0",
        config={"seed": 0}, config_hash=config_hash,
        metrics={"test/accuracy": accuracy}, cost=Cost(train_seconds=1.0, steps=3), **fields,
    )


def test_round_trip_keeps_every_field(tmp_path):
    original = record(predictions={"test": SplitPredictions([0, 1, 1, 35], [0, 1, 0, 35])},
                      collapsed=True, provenance=Provenance(ended_at="2026-01-01T00:00:00+00:00"),
                      labels=Labels("m", "t", "qv", "reference", 0.5, "top", {"train.lr": "0.01", "~x": None}, 1),
                      plan=Plan(model_type="bert", target_set="qv", targets=["q", "v"],
                                budget=PlanBudget("reference", 20, 20, 0.0),
                                modules=[Module("l.0.q", "q", 0, 1, 1, 4, 8), Module("l.0.v", "v", 0, 1, 1, 6, 12)]),
                      analysis=Analysis(probe_size=4, modules=[ModuleAnalysis("l.0.q", "q", 0, 4, [0.5, math.nan])],
                                        patching=Patching(available=False, note="no"),
                                        merge_curve=MergeCurve("accuracy", [0.0, 1.0], [0.5, 0.7])),
                      identity=Identity(ModelIdentity(random_init=True, model_type="bert"), "local:x"))
    write_record(tmp_path, original)
    loaded = read_record(tmp_path / RECORD_NAME).record
    nan_free = dataclasses.replace(original.analysis.modules[0], singular_values=[0.5, None])
    assert loaded == dataclasses.replace(
        original, analysis=dataclasses.replace(original.analysis, modules=[nan_free]),
        nonfinite=["analysis.modules[0].singular_values[1]"])
    assert loaded.status is Status.completed and loaded.plan.rank_text() == "4–6"
    assert loaded.predictions["test"].correct == [True, True, False, True]
    raw = json.loads((tmp_path / RECORD_NAME).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 3
    assert raw["labels"]["variant"] == {"train.lr": "0.01", "~x": None}
    assert loaded.labels.variant_text == "train.lr=0.01,~x"
    assert raw["predictions"]["test"] == {"predicted": "011z", "labels": "010z"}  # compact


def test_non_finite_values_are_written_as_null_and_named(tmp_path):
    nan_record = record(merge_max_abs_diff=math.nan, history=[{"step": 1, "train/loss": math.inf}])
    write_record(tmp_path, nan_record)  # json with allow_nan=False would raise without the cleaning
    raw = json.loads((tmp_path / RECORD_NAME).read_text())
    assert raw["merge_max_abs_diff"] is None and raw["history"][0]["train/loss"] is None
    assert raw["nonfinite"] == ["history[0].train/loss", "merge_max_abs_diff"]


def test_version_1_records_load_with_labels_from_their_config(tmp_path):
    v1 = {"status": "completed", "run_id": "x", "config_hash": "h",
          "config": {"model": {"name": "minilm"}, "task": {"name": "rt"}, "targets": {"matrices": ["q", "v"]},
                     "budget": {"kind": "reference", "scale": 1.0}, "seed": 2},
          "plan": {}, "metrics": {"test/accuracy": 0.7}, "history": [], "cost": {"train_seconds": 3},
          "provenance": {}, "error": None}
    (tmp_path / RECORD_NAME).write_text(json.dumps(v1))
    loaded = read_record(tmp_path / RECORD_NAME).record
    assert loaded.schema_version == 1
    assert loaded.labels == Labels(model="minilm", task="rt", target_set="qv", budget="reference", seed=2)
    assert loaded.predictions == {} and loaded.cost.train_seconds == 3


@pytest.mark.parametrize("requested, plan_name, label", [
    (["q", "k", "v", "ffn"], None, "qkv_ffn"),  # joined, this was "qkvffn"
    (["qkv", "ffn"], None, "qkv_ffn"),
    (["v", "q", "ffn_down"], None, "q+v+ffn_down"),
    (["q", "k", "v", "ffn_up", "ffn_down"], "qkv_ffn", "qkv_ffn"),  # the planner knew BERT's FFN
])
def test_version_1_target_sets_are_named_by_the_planners_rule(requested, plan_name, label):
    v1 = {"status": "completed", "config": {"targets": {"matrices": requested}},
          "plan": {"target_set": plan_name} if plan_name else {}}
    assert RunRecord.from_dict(v1).labels.target_set == label


@pytest.mark.parametrize("path", V2_RECORDS, ids=lambda p: p.stem)
def test_version_2_records_load_typed_and_write_back_the_same_sections(path, tmp_path):
    raw = json.loads(path.read_text())
    record = read_record(path).record
    assert record is not None and record.schema_version == 2
    assert record.labels.variant_text == raw["labels"]["variant"]
    assert {**record.labels.to_dict(), "variant": record.labels.variant_text} == raw["labels"]
    written = record.to_dict()
    # v3 adds the convergence flag, which a v2 record cannot have.
    assert written.keys() - {"convergence"} == raw.keys() and written["convergence"] is None
    for section in ("status", "config", "metrics", "history", "best", "predictions", "cost", "error"):
        assert written[section] == raw[section], section
    if raw["plan"].get("memory_estimate"):  # written by the runner: every plan key round-trips
        for section in ("plan", "analysis", "provenance", "identity"):
            assert written[section] == raw[section], section
    assert record.plan.lora_params == sum(m.params for m in record.plan.modules) == raw["plan"]["lora_params"]
    assert record.ended_at == raw["provenance"]["ended_at"]
    write_record(tmp_path, record)
    assert read_record(tmp_path / RECORD_NAME).record == record


def test_version_2_analysis_sections_read_as_types():
    encoder = read_record(DATA / "record_v2_encoder.json").record
    assert encoder.analysis.patching.available and encoder.analysis.merge_curve.weights[-1] == 1.5
    assert [m.matrix for m in encoder.analysis.modules] == ["q", "v", "q", "v"]
    assert encoder.identity.model.random_init and encoder.identity.data.startswith("local:")
    assert encoder.provenance.versions["torch"] and encoder.plan.memory_estimate.total_bytes > 0
    decoder = read_record(DATA / "record_v2_decoder.json").record
    assert decoder.labels.variant["task.label_words"] == "[' dull',' great']"
    assert decoder.labels.layers == "top" and decoder.plan.target_set == "qkv_ffn"
    broken = read_record(DATA / "record_v2_analysis_error.json").record
    assert broken.analysis.error.startswith("RuntimeError") and broken.analysis.modules == []
    assert broken.analysis.to_dict() == {"version": 1, "error": broken.analysis.error}


@pytest.mark.parametrize("data, reason", [
    ({"status": "completed", "history": {"step": 1}}, "history"),
    ({"status": "completed", "plan": [1]}, "plan"),
    ({"status": "completed", "plan": {"modules": {"q": 1}}}, "plan.modules"),
    ({"status": "completed", "analysis": {"modules": [{"name": "x"}]}}, "malformed"),
    ({"status": "completed", "predictions": {"test": {"predicted": "01", "labels": "0"}}}, "predictions"),
    ({"status": "finished"}, "status"),
    ([1, 2], "object"),
])
def test_malformed_records_are_reported_with_a_reason(tmp_path, data, reason):
    (tmp_path / RECORD_NAME).write_text(json.dumps(data))
    loaded = read_record(tmp_path / RECORD_NAME)
    assert loaded.record is None and reason in loaded.problem
    with pytest.raises(RecordError):
        RunRecord.from_dict(data)


def test_a_completed_record_is_moved_aside_never_overwritten(tmp_path):
    write_record(tmp_path, record(config_hash="old", accuracy=0.7))
    write_record(tmp_path, record(config_hash="new", accuracy=0.9))
    write_record(tmp_path, record(status="failed", config_hash="newer"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["result.json", "result.new.json", "result.old.json"]
    found = {item.path.name: item.record for item in find_records(tmp_path)}
    assert found["result.old.json"].metrics == {"test/accuracy": 0.7}
    assert found["result.new.json"].metrics == {"test/accuracy": 0.9}
    assert found["result.json"].status == Status.failed
    assert completed_record(tmp_path, "old").metrics == {"test/accuracy": 0.7}
    assert completed_record(tmp_path, "newer") is None  # failed is not completed
    # A failed record is replaced by the next attempt (it is not a result).
    write_record(tmp_path, record(config_hash="newer"))
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_unknown_status_cannot_be_built():
    with pytest.raises(RecordError):
        record(status="running")
