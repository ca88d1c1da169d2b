"""Mechanism probes: does the adapter change *where* the model looks (attention shift),
*what* the adapted matrices write (content shift), and how much of its gain survives when
every layer attends exactly as the base model does (attention patching)?

"Base" throughout is the adapter at weight 0 with the trained head kept (the same model as
PEFT's disable_adapter() for the LoRA layers, but disable_adapter() would also swap the
trained head for the untrained original). An SFT run trains no head: its base is the base model.

The shifts need no labels: on an SFT task they are measured alike, over every real token of
prompt and completion. Patching scores an SFT task's passes by its completion tokens (per-example
NLL and correct tokens, analysis/sft_scores.py) instead of class predictions.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lora_ablate.analysis.attention_tap import Tap, tapped
from lora_ablate.analysis.lora_modules import Adapted, adapter_weight
from lora_ablate.analysis.predict import batches, predict
from lora_ablate.analysis.sft_scores import example_scores, token_scores
from lora_ablate.config.schema import TaskFormat
from lora_ablate.records import ExampleLosses
from lora_ablate.run.batches import Batch, Encoded
from lora_ablate.run.loop import Session, forward
from lora_ablate.run.sft_batches import SftBatch

SMALLEST = 1.4e-45  # the smallest float32: a base probability that underflowed to 0


def kl_per_query(adapted: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """KL(adapted ‖ base) over the keys, (batch, heads, queries); exactly 0 where equal."""
    p, q = adapted.double(), base.double()
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(SMALLEST))).sum(-1)


def attention_mask(batch: Batch | SftBatch) -> torch.Tensor:
    """1 on real tokens, 0 on padding, (rows, width)."""
    return batch.attention_mask if isinstance(batch, SftBatch) else batch.tensors["attention_mask"]


@dataclass
class Shifts:
    attention: list[float] | None  # per layer: mean KL(adapted ‖ base) over heads and real query tokens
    content: dict[str, float]  # per adapted module: ‖out_adapted − out_base‖ / ‖out_base‖ over real tokens


@torch.no_grad()
def shifts(session: Session, modules: list[Adapted], items: Sequence[Encoded]) -> Shifts:
    session.model.eval()
    kl_sum: dict[int, float] = {}
    kl_count: dict[int, float] = {}
    diff_sq = dict.fromkeys((a.name for a in modules), 0.0)
    base_sq = dict.fromkeys((a.name for a in modules), 0.0)
    state = {"base": True, "mask": None, "outputs": {}}

    def hook(name):
        def record(module, inputs, output):
            out = output.float() * state["mask"]
            if state["base"]:
                state["outputs"][name] = out
            else:
                diff_sq[name] += float((out - state["outputs"][name]).pow(2).sum())
                base_sq[name] += float(state["outputs"][name].pow(2).sum())
        return record

    handles = [a.module.register_forward_hook(hook(a.name)) for a in modules]
    try:
        with tapped(session.model, Tap()) as tap:
            for _, batch in batches(session, items, all_answers=False):
                mask = attention_mask(batch).float()
                state["mask"] = mask.unsqueeze(-1)
                state["base"] = True
                with adapter_weight(modules, 0.0):
                    forward(session, batch)
                base_probs = dict(tap.probs)
                state["base"] = False
                forward(session, batch)
                queries = mask[:, None, :]  # (batch, 1, query)
                for layer, probs in tap.probs.items():
                    kl = kl_per_query(probs, base_probs[layer])[..., : queries.shape[-1]] * queries
                    kl_sum[layer] = kl_sum.get(layer, 0.0) + float(kl.sum())
                    kl_count[layer] = kl_count.get(layer, 0.0) + float(queries.sum()) * probs.shape[1]
                tap.probs.clear()
    finally:
        for handle in handles:
            handle.remove()
    attention = [kl_sum[l] / kl_count[l] for l in sorted(kl_sum)] or None
    content = {n: (diff_sq[n] / base_sq[n]) ** 0.5 if base_sq[n] > 0 else float("nan") for n in diff_sq}
    return Shifts(attention, content)


Outputs = list[int] | ExampleLosses  # class ids, or an SFT task's per-example completion scores


@dataclass(frozen=True)
class Patching:
    base: Outputs | None  # at weight 0 (the base model, with the trained head on classification tasks)
    patched: Outputs | None  # adapted model, every layer's attention probabilities from the base pass
    probe_max_abs_diff: float  # the probe attention's scores vs the model's own, at weight 1
    available: bool  # False: the model's attention does not go through the probe function (base, patched None)


@torch.no_grad()
def attention_patching(session: Session, modules: list[Adapted], items: Sequence[Encoded]) -> Patching:
    session.model.eval()
    tap = Tap()
    sft = session.task_format == TaskFormat.sft
    score = (lambda batch: token_scores(session, batch)) if sft else (lambda batch: forward(session, batch)[1])

    def passes(batch):
        tap.mode = "record"
        with adapter_weight(modules, 0.0):
            base = score(batch)
        tap.mode = "patch"
        patched = score(batch)
        return [base, patched]

    first = next(batches(session, items[:8]))[1]
    _, own = forward(session, first)
    with tapped(session.model, tap):
        tap.mode = "off"
        _, probed = forward(session, first)
        available = bool(tap.layers)
        outputs = (example_scores if sft else predict)(session, items, passes) if available else (None, None)
    return Patching(*outputs, float((probed - own).abs().max()), available)
