"""The run record type: written, read and faked through one class; older records load;
a completed record is never overwritten; NaN never reaches the JSON."""

import json
import math

import pytest

from lora_ablate.records import (
    RECORD_NAME, Cost, Labels, RecordError, RunRecord, SplitPredictions, completed_record,
    find_records, read_record, write_record,
)


def record(status: str = "completed", config_hash: str = "aaaa", accuracy: float = 0.8, **extra) -> RunRecord:
    return RunRecord(
        status=status, run_id="model=m,task=t,targets=qv,budget=reference,seed=0",
        labels=Labels(model="m", task="t", target_set="qv", budget="reference", seed=0),
        config={"seed": 0}, config_hash=config_hash, plan={"lora_params": 10},
        metrics={"test/accuracy": accuracy}, cost=Cost(train_seconds=1.0, steps=3), **extra,
    )


def test_round_trip_keeps_every_field(tmp_path):
    original = record(predictions={"test": SplitPredictions([0, 1, 1, 35], [0, 1, 0, 35])},
                      collapsed=True, provenance={"ended_at": "2026-01-01T00:00:00+00:00"})
    write_record(tmp_path, original)
    loaded = read_record(tmp_path / RECORD_NAME).record
    assert loaded == original
    assert loaded.predictions["test"].correct == [True, True, False, True]
    raw = json.loads((tmp_path / RECORD_NAME).read_text())
    assert raw["schema_version"] == 2
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


@pytest.mark.parametrize("data, reason", [
    ({"status": "completed", "history": {"step": 1}}, "history"),
    ({"status": "completed", "plan": [1]}, "plan"),
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
    assert found["result.json"].status == "failed"
    assert completed_record(tmp_path, "old").metrics == {"test/accuracy": 0.7}
    assert completed_record(tmp_path, "newer") is None  # failed is not completed
    # A failed record is replaced by the next attempt (it is not a result).
    write_record(tmp_path, record(config_hash="newer"))
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_unknown_status_cannot_be_built():
    with pytest.raises(RecordError):
        record(status="running")
