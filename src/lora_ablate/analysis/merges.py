"""The weighted-merge curve: the test metric with every LoRA update scaled by s
(s = 0: the base model with the trained head; s = 1: the run as trained), each point
evaluated with the scaled update merged into the weights, as a deployed merge would be."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lora_ablate.analysis.lora_modules import Adapted, adapter_weight, merged
from lora_ablate.analysis.predict import predict
from lora_ablate.run.batches import Encoded
from lora_ablate.run.loop import Session, collate, forward

CHECK_ROWS = 8  # rows of the batch on which merged and unmerged outputs are compared


@dataclass(frozen=True)
class CurvePoint:
    weight: float
    predicted: list[int]
    merge_max_abs_diff: float | None  # |merged - unmerged| scores at this weight, on CHECK_ROWS rows; None: not evaluated here


@torch.no_grad()
def scaled_predictions(session: Session, modules: list[Adapted], items: Sequence[Encoded], s: float) -> CurvePoint:
    """Predictions with the update scaled by s and merged, and the check that merging
    the scaled update changes no output."""
    session.model.eval()
    check = collate(session, list(items[:CHECK_ROWS]), all_answers=True)
    with adapter_weight(modules, s):
        _, unmerged = forward(session, check)
        with merged(session.model, modules):
            _, merged_scores = forward(session, check)
            ids = predict(session, items)[0]
    return CurvePoint(s, ids, float((merged_scores - unmerged).abs().max()))


def merge_curve(session: Session, modules: list[Adapted], items: Sequence[Encoded], weights: Sequence[float],
                known: dict[float, list[int]]) -> list[CurvePoint]:
    """One point per weight; a weight in `known` (s=1: the run's own test predictions on
    these items; s=0: the patching pass's) is taken from there, not evaluated again."""
    return [CurvePoint(float(s), known[float(s)], None) if float(s) in known else scaled_predictions(session, modules, items, float(s))
            for s in weights]
