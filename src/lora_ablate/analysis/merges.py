"""The weighted-merge curve: the test metric with every LoRA update scaled by s
(s = 0: the base model, with the trained head on classification tasks; s = 1: the run as
trained), each point evaluated with the scaled update merged into the weights, as a deployed
merge would be. A classification point holds class predictions; an SFT point its examples'
completion scores (the metric is computed from either in analysis/run.py)."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from lora_ablate.analysis.lora_modules import Adapted, adapter_weight, merged
from lora_ablate.analysis.predict import predict
from lora_ablate.analysis.sft_scores import example_scores
from lora_ablate.config.schema import TaskFormat
from lora_ablate.records import ExampleLosses
from lora_ablate.run.batches import Encoded
from lora_ablate.run.loop import Session, collate, forward

CHECK_ROWS = 8  # rows of the batch on which merged and unmerged outputs are compared


@dataclass(frozen=True)
class CurvePoint:
    weight: float
    predicted: list[int] = field(default_factory=list)  # class ids (classification)
    merge_max_abs_diff: float | None = None  # |merged - unmerged| scores at this weight, on CHECK_ROWS rows; None: not evaluated here
    losses: ExampleLosses | None = None  # per-example completion scores (sft)


@torch.no_grad()
def scaled_point(session: Session, modules: list[Adapted], items: Sequence[Encoded], s: float) -> CurvePoint:
    """Predictions (or SFT scores) with the update scaled by s and merged, and the check that
    merging the scaled update changes no output."""
    session.model.eval()
    check = collate(session, list(items[:CHECK_ROWS]), all_answers=True)
    with adapter_weight(modules, s):
        _, unmerged = forward(session, check)
        with merged(session.model, modules):
            _, merged_scores = forward(session, check)
            if session.task_format == TaskFormat.sft:
                point = CurvePoint(s, losses=example_scores(session, items)[0])
            else:
                point = CurvePoint(s, predict(session, items)[0])
    return replace(point, merge_max_abs_diff=float((merged_scores - unmerged).abs().max()))


def merge_curve(session: Session, modules: list[Adapted], items: Sequence[Encoded], weights: Sequence[float],
                known: dict[float, CurvePoint]) -> list[CurvePoint]:
    """One point per weight; a weight in `known` (s=1: the run's own test evaluation of these
    items; s=0: the patching pass's base) is taken from there, not evaluated again."""
    return [known[float(s)] if float(s) in known else scaled_point(session, modules, items, float(s))
            for s in weights]
