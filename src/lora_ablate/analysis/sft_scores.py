"""An SFT task's completion tokens scored for the analyses: each example's summed NLL and
argmax-correct tokens, as run/sft_eval.evaluate_sft computes them (the same completion-token
NLL under the run's autocast, batched by length), with a hook around each forward pass
(attention patching makes two per batch); and the task metrics read from those scores.

The analyses score an SFT run by `loss` (NLL per completion token, lower is better) or
`token_accuracy`; a task metric that needs generation (exact match) is not evaluated at
every merge weight: those runs are analysed by `loss`, and the record says so."""

import math
from collections.abc import Callable, Sequence

import torch

from lora_ablate.analysis.predict import batches
from lora_ablate.data.sft import SftEncoded
from lora_ablate.records import ExampleLosses
from lora_ablate.run.loop import Session
from lora_ablate.run.sft_batches import SftBatch
from lora_ablate.run.sft_loss import completion_token_nll

SCORED = ("loss", "token_accuracy")  # what the completion tokens' scores give without generating
TokenScores = tuple[torch.Tensor, torch.Tensor]  # (NLL, argmax-correct) per completion token


def analysis_metric(task_metric: str) -> str:
    """The metric the analyses report for an SFT task: its own when the scores give it, else loss."""
    return str(task_metric) if task_metric in SCORED else "loss"


def token_scores(session: Session, batch: SftBatch) -> TokenScores:
    """One forward pass of the batch, as evaluation makes it."""
    with torch.autocast(session.device.type, dtype=session.autocast_dtype, enabled=session.autocast_dtype is not None):
        return completion_token_nll(session.model, batch)


@torch.no_grad()
def example_scores(session: Session, items: Sequence[SftEncoded],
                   passes: Callable[[SftBatch], list[TokenScores]] | None = None) -> list[ExampleLosses]:
    """Per-example scores of `items`, in their order, for each of the passes `passes(batch)`
    makes (default: one plain forward)."""
    session.model.eval()
    run = passes or (lambda batch: [token_scores(session, batch)])
    nll: list[torch.Tensor] = []
    correct: list[torch.Tensor] = []
    for indices, batch in batches(session, items):
        rows = torch.tensor(indices)
        for p, (token_nll, hit) in enumerate(run(batch)):
            if len(nll) <= p:
                nll.append(torch.zeros(len(items), dtype=torch.float64))
                correct.append(torch.zeros(len(items), dtype=torch.long))
            sums = torch.zeros(len(indices), dtype=torch.float64, device=token_nll.device)
            nll[p][rows] = sums.index_add_(0, batch.rows, token_nll.double()).cpu()
            hits = torch.zeros(len(indices), dtype=torch.long, device=hit.device)
            correct[p][rows] = hits.index_add_(0, batch.rows, hit.long()).cpu()
    tokens = [item.completion_length for item in items]
    return [ExampleLosses(n.tolist(), list(tokens), c.tolist()) for n, c in zip(nll, correct)]


def first(scores: ExampleLosses, n: int) -> ExampleLosses:
    """The scores of the first n examples (the analysis subset of a split's scores)."""
    return ExampleLosses(scores.nll[:n], scores.tokens[:n], scores.correct[:n])


def _numerators(scores: ExampleLosses, name: str) -> list[float]:
    if name not in SCORED:
        raise ValueError(f"metric {name!r} is not computed from completion-token scores; one of {', '.join(SCORED)} is")
    return [float(x) for x in (scores.nll if name == "loss" else scores.correct)]


def metric_value(scores: ExampleLosses, name: str) -> float:
    """The token-weighted metric over the examples, as evaluate_sft reports it."""
    return sum(_numerators(scores, name)) / max(sum(scores.tokens), 1)


def difference_standard_error(full: ExampleLosses, base: ExampleLosses, name: str) -> float:
    """Standard error of metric(full) − metric(base) on the same examples. The metric is a
    ratio Σ d_i / Σ t_i of per-example sums, so the delta method (paired by example) gives
    Var ≈ n/(n−1) · Σ (d_i − Δ·t_i)² / (Σ t_i)², Δ the difference itself."""
    d = [f - b for f, b in zip(_numerators(full, name), _numerators(base, name))]
    tokens = sum(full.tokens)
    n = len(d)
    if n < 2 or tokens == 0:
        return math.inf
    delta = sum(d) / tokens
    residual = sum((x - delta * t) ** 2 for x, t in zip(d, full.tokens))
    return math.sqrt(n / (n - 1) * residual) / tokens
