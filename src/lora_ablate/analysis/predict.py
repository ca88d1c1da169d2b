"""Predictions in the items' own order, batch by batch, as `run.loop.evaluate` makes
them (same batches, same scores), with a hook for what to do around each forward pass.
`batches` serves every task format (an SFT task's are evaluate_sft's, by length)."""

from collections.abc import Callable, Sequence

import torch

from lora_ablate.config.schema import TaskFormat
from lora_ablate.data.sft import SftEncoded
from lora_ablate.run.batches import Encoded, eval_index_batches
from lora_ablate.run.loop import EVAL_MAX_TOKENS, Session, collate, forward
from lora_ablate.run.metrics import classification_metrics
from lora_ablate.run.sft_batches import length_batches


def batches(session: Session, items: Sequence[Encoded] | Sequence[SftEncoded], *, all_answers: bool = True):
    """(item indices, collated batch) over `items`, as the run's evaluation batches them."""
    max_tokens = EVAL_MAX_TOKENS.get(session.device.type, EVAL_MAX_TOKENS["cuda"])
    if session.task_format == TaskFormat.sft:
        cut = length_batches([len(item.input_ids) for item in items], max_tokens, session.eval_batch_size)
    else:
        cut = eval_index_batches(items, max_tokens, max_rows=session.eval_batch_size)
    for indices in cut:
        yield indices, collate(session, [items[i] for i in indices], all_answers=all_answers)


def predicted(session: Session, score: torch.Tensor, rows: int) -> torch.Tensor:
    """Class ids from a forward pass's scores (label words: one score per candidate)."""
    return (score.view(rows, -1) if session.task_format == TaskFormat.label_words else score).argmax(-1)


@torch.no_grad()
def predict(session: Session, items: Sequence[Encoded],
            passes: Callable[[object], list[torch.Tensor]] | None = None) -> list[list[int]]:
    """Class ids of every item for each of the passes `passes(batch)` makes (default: one
    plain forward), in item order."""
    session.model.eval()
    run = passes or (lambda batch: [forward(session, batch)[1]])
    out: list[list[int]] = []
    for indices, batch in batches(session, items):
        for p, score in enumerate(run(batch)):
            if len(out) <= p:
                out.append([0] * len(items))
            for i, c in zip(indices, predicted(session, score, len(indices)).tolist()):
                out[p][i] = c
    return out


def metric(session: Session, ids: list[int], labels: list[int], name: str) -> float:
    return float(classification_metrics(torch.tensor(ids), torch.tensor(labels), session.num_labels)[name])
