"""The `analysis` section of a run record: one type that the analysis writer
(analysis/run.py) fills and the report (report/analysis_frames.py) reads, so the two agree
through fields, not string keys. The singular vectors are kept beside the record in
VECTORS_NAME (safetensors: `<module name>.left` and `.right`). No torch here."""

from dataclasses import dataclass, field
from typing import Any

from lora_ablate.record_fields import items, known, mapping, optional_float

VECTORS_NAME = "analysis.safetensors"
# 2: SFT runs analysed (task_format, the metric's direction in the merge curve and patching).
# Version 1 sections load with those fields None: classification, directions read from the metric's name.
ANALYSIS_VERSION = 2


def _when_set(**fields: Any) -> dict[str, Any]:
    """Fields added in version 2, written only when set, so a version 1 section is written
    back as it was read."""
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class ModuleAnalysis:
    """The update ΔW of one adapted module (LoRA paper §7), and how much it shifts the
    module's output on the probe examples."""

    name: str
    matrix: str
    layer: int
    rank: int
    singular_values: list[float | None] = field(default_factory=list)  # top-k of ΔW, descending
    relative_norm: float | None = None  # ‖ΔW‖_F / ‖W‖_F
    effective_rank: float | None = None
    amplification: float | None = None  # ‖ΔW‖_F / ‖UᵀWV‖_F
    content_shift: float | None = None  # relative change of the module's output

    @classmethod
    def from_dict(cls, value: Any) -> "ModuleAnalysis":
        data = mapping(value, "analysis.modules")
        return known(cls, data, "analysis.modules",
                     singular_values=[optional_float(v) for v in items(data.get("singular_values"),
                                                                        "analysis.modules.singular_values")],
                     **{k: optional_float(data.get(k)) for k in
                        ("relative_norm", "effective_rank", "amplification", "content_shift")})


@dataclass(frozen=True)
class Patching:
    """Attention patching: the metric with the base model's attention maps patched in.
    Unavailable (with a note) where the model's attention is not reachable."""

    available: bool = False
    note: str | None = None
    metric: str | None = None
    n: int | None = None
    base: float | None = None
    full: float | None = None
    patched: float | None = None
    gain: float | None = None
    attention_share: float | None = None
    surviving_share: float | None = None
    probe_max_abs_diff: float | None = None
    higher_is_better: bool | None = None  # the metric's direction (an SFT loss: False)

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "note": self.note}
        out = {"available": True, "metric": self.metric, "n": self.n, "base": self.base, "full": self.full,
               "patched": self.patched, "gain": self.gain, "attention_share": self.attention_share,
               "surviving_share": self.surviving_share, "probe_max_abs_diff": self.probe_max_abs_diff,
               "note": self.note}
        return out | _when_set(higher_is_better=self.higher_is_better)


@dataclass(frozen=True)
class MergeCurve:
    """The metric with the update scaled by each weight and merged."""

    metric: str | None = None
    weights: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    merge_max_abs_diff: float | None = None
    higher_is_better: bool | None = None  # the metric's direction (an SFT loss: False)

    def to_dict(self) -> dict[str, Any]:
        out = {"metric": self.metric, "weights": list(self.weights), "values": list(self.values),
               "merge_max_abs_diff": self.merge_max_abs_diff}
        return out | _when_set(higher_is_better=self.higher_is_better)


@dataclass(frozen=True)
class Analysis:
    """Every analysis of a completed run; an analysis that failed holds only its `error`."""

    version: int = ANALYSIS_VERSION
    error: str | None = None
    probe_size: int | None = None
    eval_size: int | None = None
    attention_implementation: str | None = None
    effective_rank_definition: str | None = None
    modules: list[ModuleAnalysis] = field(default_factory=list)
    vectors: str | None = None  # VECTORS_NAME when the vectors were written beside the record
    attention_shift: list[float | None] | None = None  # per layer; None: not measured
    patching: Patching | None = None
    merge_curve: MergeCurve | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per analysis step
    task_format: str | None = None  # head | label_words | sft; None in version 1 (classification)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"version": self.version, "error": self.error}
        return {
            "version": self.version, "probe_size": self.probe_size, "eval_size": self.eval_size,
            "attention_implementation": self.attention_implementation,
            "effective_rank_definition": self.effective_rank_definition,
            "modules": [vars(m).copy() | {"singular_values": list(m.singular_values)} for m in self.modules],
            "vectors": self.vectors,
            "attention_shift": None if self.attention_shift is None else list(self.attention_shift),
            "patching": None if self.patching is None else self.patching.to_dict(),
            "merge_curve": None if self.merge_curve is None else self.merge_curve.to_dict(),
            "seconds": dict(self.seconds),
        } | _when_set(task_format=self.task_format)

    @classmethod
    def from_dict(cls, value: Any) -> "Analysis":
        data = mapping(value, "analysis")
        patching, curve = data.get("patching"), data.get("merge_curve")
        curve_data = mapping(curve, "analysis.merge_curve")
        return known(
            cls, data, "analysis",
            modules=[ModuleAnalysis.from_dict(m) for m in items(data.get("modules"), "analysis.modules")],
            attention_shift=None if data.get("attention_shift") is None else [
                optional_float(v) for v in items(data.get("attention_shift"), "analysis.attention_shift")],
            patching=None if patching is None else known(Patching, patching, "analysis.patching"),
            merge_curve=None if curve is None else known(
                MergeCurve, curve_data, "analysis.merge_curve",
                weights=[float(w) for w in items(curve_data.get("weights"), "analysis.merge_curve.weights")],
                values=[optional_float(v) for v in items(curve_data.get("values"), "analysis.merge_curve.values")]),
            seconds={str(k): float(v) for k, v in mapping(data.get("seconds"), "analysis.seconds").items()
                     if v is not None},
        )
