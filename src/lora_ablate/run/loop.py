"""The training loop and evaluation: plain PyTorch, top to bottom."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase, get_scheduler

from lora_ablate.run.batches import Batch, Encoded, collate_head, collate_label_words, eval_index_batches, train_index_batches
from lora_ablate.config.schema import TaskFormat, TrainConfig
from lora_ablate.data.sft import SftEncoded
from lora_ablate.records import ExampleLosses
from lora_ablate.run.loggers import Logger
from lora_ablate.run.metrics import classification_metrics
from lora_ablate.run.pairing import RandomStream, derived_seed
from lora_ablate.run.progress import RunProgress
from lora_ablate.run.sft_batches import SftBatch, collate_sft
from lora_ablate.run.sft_eval import evaluate_sft
from lora_ablate.run.sft_generate import GenerationSettings, exact_match_bits
from lora_ablate.run.sft_loss import completion_token_nll

LOG_EVERY = 10  # steps between host syncs for the progress bar and the divergence check
# Padded tokens per evaluation batch. On CPU small batches stay in cache: MiniLM evaluates
# 500 sentences in 4.3 s at 2,048 tokens and in 11.9 s at 32,768. On GPU big batches fill it.
EVAL_MAX_TOKENS = {"cpu": 2_048, "cuda": 32_768}


@dataclass
class Session:
    """Everything the loop needs, already on its device."""

    model: nn.Module
    task_format: TaskFormat  # head | label_words | sft
    num_labels: int
    pad_id: int
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16, or None for fp32
    train_items: Sequence[Encoded] | Sequence[SftEncoded]
    val_items: Sequence[Encoded] | Sequence[SftEncoded]
    test_items: Sequence[Encoded] | Sequence[SftEncoded]
    eval_batch_size: int = 256  # most rows per evaluation batch (train.eval_batch_size)
    precision: str = "fp32"  # what runs, for the record: bf16 (autocast, frozen matmul weights in bf16) | fp32
    dropped_completions: dict[str, int] = field(default_factory=dict)  # sft: split -> completions too long
    tokenizer: PreTrainedTokenizerBase | None = None  # sft with a checkable answer: decodes generations
    generation: GenerationSettings | None = None  # sft with a checkable answer (task.max_new_tokens > 0)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    diverged_at: int | None = None  # step whose loss was NaN/inf
    steps: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0


def collate(session: Session, items: Sequence[Encoded], *, all_answers: bool) -> Batch | SftBatch:
    if session.task_format == TaskFormat.sft:
        return collate_sft(items, session.pad_id).to(session.device)
    if session.task_format == TaskFormat.head:
        batch = collate_head(items, session.pad_id)
    else:
        batch = collate_label_words(items, session.pad_id, all_answers=all_answers)
    def move(tensor: torch.Tensor | None) -> torch.Tensor | None:  # pinned + non_blocking: no sync per step
        if tensor is None or session.device.type == "cpu":
            return tensor
        return tensor.pin_memory().to(session.device, non_blocking=True)

    tensors = {k: move(v) for k, v in batch.tensors.items()}
    labels = tensors["labels"] if "labels" in tensors else move(batch.labels)
    return Batch(tensors, labels, batch.tokens, move(batch.answer_mask), batch.keep, move(batch.candidates))


def forward(session: Session, batch: Batch | SftBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-row score): head -> class logits; label_words -> the summed
    log-likelihood of each row's answer tokens, computed on the last positions only;
    sft -> the mean NLL of the batch's completion tokens, and each token's NLL."""
    with torch.autocast(session.device.type, dtype=session.autocast_dtype, enabled=session.autocast_dtype is not None):
        if isinstance(batch, SftBatch):
            nll, _ = completion_token_nll(session.model, batch)
            return nll.mean(), nll
        if session.task_format == TaskFormat.head:
            out = session.model(**batch.tensors)
            return out.loss, out.logits.float()
        inputs = {k: v for k, v in batch.tensors.items() if k != "answer_ids"}
        logits = session.model(**inputs, logits_to_keep=batch.keep).logits
    if batch.candidates is not None:  # one-token label words: score them all at the last position
        scores = F.log_softmax(logits[:, -1].float(), dim=-1)[:, batch.candidates]
        return F.cross_entropy(scores, batch.labels), scores
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token_lp = logprobs.gather(-1, batch.tensors["answer_ids"].unsqueeze(-1)).squeeze(-1) * batch.answer_mask
    loss = -token_lp.sum() / batch.answer_mask.sum()
    return loss, token_lp.sum(-1)


@dataclass
class Evaluation:
    metrics: dict[str, float]  # "<prefix>/<name>", finite values only
    predicted: list[int]  # class ids in the order of the items (none for sft)
    labels: list[int]
    losses: ExampleLosses | None = None  # sft: per-example NLL and token counts


@torch.no_grad()
def evaluate(session: Session, items: Sequence[Encoded], prefix: str, *, generate: bool = False) -> Evaluation:
    """The split's metrics. `generate`: an SFT task with a checkable answer also gets the
    exact match of greedy generation (the final evaluation only: it costs up to
    max_new_tokens forward passes per batch)."""
    max_tokens = EVAL_MAX_TOKENS.get(session.device.type, EVAL_MAX_TOKENS["cuda"])
    if session.task_format == TaskFormat.sft:
        metrics, losses = evaluate_sft(session.model, items, pad_id=session.pad_id, device=session.device,
                                       autocast_dtype=session.autocast_dtype, max_tokens=max_tokens,
                                       max_rows=session.eval_batch_size)
        if generate and session.generation is not None:
            bits = exact_match_bits(session.model, items, tokenizer=session.tokenizer, settings=session.generation,
                                    pad_id=session.pad_id, device=session.device,
                                    autocast_dtype=session.autocast_dtype, max_tokens=max_tokens,
                                    max_rows=session.eval_batch_size)
            metrics["exact_match"] = sum(bits) / len(bits)
            losses = replace(losses, exact_match=bits)
        return Evaluation({f"{prefix}/{k}": v for k, v in metrics.items() if math.isfinite(v)}, [], [], losses)
    was_training = session.model.training
    session.model.eval()
    scores, labels, order = [], [], []
    for indices in eval_index_batches(items, max_tokens, max_rows=session.eval_batch_size):
        batch = collate(session, [items[i] for i in indices], all_answers=True)
        _, score = forward(session, batch)
        scores.append(score.view(len(indices), -1) if session.task_format == TaskFormat.label_words else score)
        labels.append(batch.labels)
        order.extend(indices)
    session.model.train(was_training)
    all_scores, all_labels = torch.cat(scores), torch.cat(labels)
    predicted = all_scores.argmax(-1)
    metrics = classification_metrics(predicted, all_labels, session.num_labels)
    metrics["loss"] = float(F.cross_entropy(all_scores, all_labels))
    in_order = torch.empty_like(predicted)  # batches were sorted by length: undo that
    in_order[torch.tensor(order, device=predicted.device)] = predicted
    gold = torch.empty_like(all_labels)
    gold[torch.tensor(order, device=all_labels.device)] = all_labels
    # A diverged model has no loss: leave the key out rather than record NaN.
    finite = {f"{prefix}/{name}": value for name, value in metrics.items() if math.isfinite(value)}
    return Evaluation(finite, in_order.tolist(), gold.tolist())


def total_steps(cfg: TrainConfig, train_size: int) -> int:
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * train_size / (cfg.batch_size * cfg.grad_accum)))
    return cfg.max_steps


def trainable_groups(model: nn.Module, head_names: Sequence[str]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(LoRA parameters, head parameters): the head is every trainable parameter under a head module."""
    lora, head = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if any(f".{h}." in name for h in head_names) else lora).append(param)
    return lora, head


def make_optimizer(model: nn.Module, cfg: TrainConfig, head_names: Sequence[str]) -> torch.optim.Optimizer:
    """AdamW; the head (modules_to_save) may get its own learning rate."""
    lora, head = trainable_groups(model, head_names)
    groups = [{"params": lora, "lr": cfg.lr}]
    if head:
        groups.append({"params": head, "lr": cfg.head_lr or cfg.lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=True)  # one kernel, not a loop


def clip_apart(groups: Sequence[Sequence[nn.Parameter]], max_norm: float) -> None:
    """Clip each group's gradient norm on its own."""
    for group in groups:
        torch.nn.utils.clip_grad_norm_(group, max_norm, foreach=True)


def fit(
    session: Session,
    cfg: TrainConfig,
    *,
    seed: int,
    head_names: Sequence[str],
    logger: Logger,
    result: FitResult | None = None,
    stop_check: Callable[[], None] = lambda: None,
    progress: RunProgress | None = None,
) -> FitResult:
    """Train for the configured steps. `result` is filled in as training goes, so a caller
    that is interrupted still knows how far it got; `stop_check` raises, before each step,
    a stop signal that was received but lost (see interrupts.stop_signals)."""
    steps = total_steps(cfg, len(session.train_items))
    model = session.model
    optimizer = make_optimizer(model, cfg, head_names)
    schedule = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    scheduler = get_scheduler(schedule, optimizer, round(cfg.warmup_ratio * steps), steps)
    stream = train_index_batches([len(i.input_ids) for i in session.train_items], cfg.batch_size, seed)
    result = FitResult() if result is None else result
    running_loss = torch.zeros((), device=session.device)
    last_loss: float | None = None
    # Clipped apart: one joint norm would let the LoRA gradients, which differ by target set,
    # rescale the head's step, and the head is what every target set shares.
    clip_groups = [group for group in trainable_groups(model, head_names) if group]
    model.train()
    progress = progress or RunProgress("train")
    progress.start_training(steps)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        stop_check()
        for micro in range(cfg.grad_accum):
            batch = collate(session, [session.train_items[i] for i in next(stream)], all_answers=False)
            # Dropout masks from (seed, step) alone: the same in every target set of a seed.
            torch.manual_seed(derived_seed(seed, RandomStream.dropout, step, micro))
            loss, _ = forward(session, batch)
            (loss / cfg.grad_accum).backward()
            running_loss += loss.detach() / cfg.grad_accum
            result.train_tokens += batch.tokens
        if cfg.grad_clip > 0:  # clip_grad_norm_ with 0 would zero every gradient
            clip_apart(clip_groups, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.steps = step
        tokens_per_second = None
        if step % LOG_EVERY == 0 or step == steps:
            last_loss = running_loss.item() / (step % LOG_EVERY or LOG_EVERY)  # one host sync per LOG_EVERY steps
            running_loss.zero_()
            if not math.isfinite(last_loss):
                result.diverged_at = step
                break
            elapsed = result.train_seconds + time.perf_counter() - start  # evaluation time excluded
            tokens_per_second = result.train_tokens / max(elapsed, 1e-9)
            logger.log({"train/loss": last_loss, "train/lr": scheduler.get_last_lr()[0]}, step)
        progress.stepped(step, last_loss if tokens_per_second else None, tokens_per_second)
        if cfg.eval_every and step % cfg.eval_every == 0 and step != steps:
            result.train_seconds += _synchronized_elapsed(session.device, start)
            point = {"step": step} | ({"train/loss": last_loss} if last_loss is not None else {})
            point.update(evaluate(session, session.val_items, "val").metrics)
            result.history.append(point)
            logger.log({k: v for k, v in point.items() if k.startswith("val/")}, step)
            start = time.perf_counter()
    progress.end_training()
    result.train_seconds += _synchronized_elapsed(session.device, start)
    return result


def _synchronized_elapsed(device: torch.device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
