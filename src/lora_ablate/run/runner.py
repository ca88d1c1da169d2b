"""One run, end to end: `train(cfg) -> RunRecord`, called alike by the CLI, the tests and
the benchmark. Data, model, adapter, training, evaluation, and a record written for every
run that started (completed, failed, diverged or interrupted), atomically, never over a
completed one."""

import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lora_ablate.config.metrics import curve_metric, higher_is_better
from lora_ablate.config.schema import ModelConfig, RunConfig, TaskFormat
from lora_ablate.convergence import Convergence, convergence
from lora_ablate.data.tasks import data_identity
from lora_ablate.errors import ConfigError
from lora_ablate.identity import RunKey, run_key
from lora_ablate.plan.resolve import ResolvedRun, resolve_run
from lora_ablate.records import (
    Analysis, Cost, ExampleLosses, Identity, ModelIdentity, RunError, RunRecord, SplitPredictions, Status,
    completed_record, write_record,
)
from lora_ablate.run.interrupts import Interrupted, RunLock, stop_signals
from lora_ablate.run.loggers import NullLogger, open_logger
from lora_ablate.run.loop import Evaluation, FitResult, Session, collate, evaluate, fit, forward
from lora_ablate.run.progress import RunProgress, cell_label
from lora_ablate.run.provenance import now_iso, provenance
from lora_ablate.run.devices import pick_device
from lora_ablate.run.session import peak_memory_bytes, prepare, reset_peak_memory

log = logging.getLogger(__name__)
# PEFT still calls this renamed transformers method; the warning is noise for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class JobSlot:
    """Where a run sits in a sweep: its job number (None: a single run) and how many jobs
    run at once."""

    index: int | None = None
    parallel_jobs: int = 1


@dataclass
class Outcome:
    """What training and evaluation produced, filled in as far as the run got."""

    status: Status = Status.failed
    fit: FitResult = field(default_factory=FitResult)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    predictions: dict[str, SplitPredictions] = field(default_factory=dict)
    example_losses: dict[str, ExampleLosses] = field(default_factory=dict)  # sft
    collapsed: bool = False
    convergence: Convergence | None = None
    merge_max_abs_diff: float | None = None
    analysis: Analysis | None = None
    analysis_seconds: float | None = None
    eval_seconds: float | None = None
    error: RunError | None = None


def train(cfg: RunConfig, *, run_dir: Path, overrides: list[str] | tuple[str, ...] = (),
          job: JobSlot | None = None, resolved: ResolvedRun | None = None) -> RunRecord:
    """Train one cell into `run_dir`, or return its completed record when one of the same
    config exists there. Raises what stopped the run after writing its record."""
    resolved = resolved or resolve_run(cfg)
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    key = run_key(config, resolved.plan.target_set, list(overrides))
    run_dir = Path(run_dir)
    job = job or JobSlot()
    progress = RunProgress(cell_label(key.labels, job.index), bar=job.parallel_jobs == 1)
    done = completed_record(run_dir, key.config_hash)
    if done is not None:
        progress.phase("skipped, a completed record of the same config is in %s", run_dir)
        return done
    with RunLock(run_dir, key.run_id):
        done = completed_record(run_dir, key.config_hash)  # another process may just have finished it
        if done is not None:
            return done
        return _train_locked(cfg, resolved, config, key, run_dir, job, progress)


def _train_locked(cfg: RunConfig, resolved: ResolvedRun, config: dict[str, Any], key: RunKey,
                  run_dir: Path, job: JobSlot, progress: RunProgress) -> RunRecord:
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // job.parallel_jobs)
    torch.set_num_threads(threads)  # parallel jobs must not oversubscribe the cores
    device = pick_device(cfg.train.device, job.index or 0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reset_peak_memory(device)
    started_at = now_iso()
    outcome, session, logger = Outcome(), None, NullLogger()
    bad_input = False
    # Signals stay held until the record is written: a second Ctrl-C cannot cut it short.
    with stop_signals() as stop_check:
        try:
            logger = open_logger(cfg.logger, name=key.run_id, group=cfg.sweep_name,
                                 job_type=resolved.plan.target_set, config=config, run_dir=run_dir,
                                 plan=resolved.plan.to_dict())
            progress.phase("loading %s and %s on %s", cfg.model.name, cfg.task.name, device)
            session = prepare(cfg, resolved, device)
            _train_and_evaluate(cfg, resolved, session, outcome, logger, run_dir, stop_check, progress)
            if cfg.save_adapter and outcome.status == Status.completed:
                save_adapter(session, run_dir / "adapter")
        except ConfigError:  # bad user input, found before training: reported, not recorded
            bad_input = True
            raise
        except BaseException as err:  # a record of every run that started
            interrupted = isinstance(err, (KeyboardInterrupt, Interrupted, SystemExit))
            outcome.status = Status.interrupted if interrupted else Status.failed
            outcome.error = RunError(type(err).__name__, str(err) or repr(err))
            raise
        finally:
            progress.end_training()  # a bar left open by an interrupted fit
            if not bad_input:
                record = _record(cfg, resolved, config, key, outcome, session, device, started_at)
                path = write_record(run_dir, record)
                logger.finish(record)
                progress.phase("%s%s; record: %s", record.status, _headline(record, cfg.task.metric), path)
    return record


def _train_and_evaluate(cfg: RunConfig, resolved: ResolvedRun, session: Session, outcome: Outcome,
                        logger: Any, run_dir: Path | None = None, stop_check: Callable[[], None] = lambda: None,
                        progress: RunProgress | None = None) -> None:
    progress = progress or RunProgress()
    fit(session, cfg.train, seed=cfg.seed, head_names=resolved.plan.head_modules, logger=logger,
        result=outcome.fit, stop_check=stop_check, progress=progress)
    outcome.history = outcome.fit.history
    if outcome.fit.diverged_at is not None:
        outcome.status = Status.diverged
        outcome.error = RunError("Diverged", f"loss became NaN or inf by step {outcome.fit.diverged_at}")
        return
    started = time.perf_counter()
    progress.phase("validation (%d examples)", len(session.val_items))
    val = evaluate(session, session.val_items, "val", generate=True)
    progress.phase("test (%d examples)", len(session.test_items))
    test = evaluate(session, session.test_items, "test", generate=True)
    outcome.eval_seconds = time.perf_counter() - started
    outcome.metrics = val.metrics | test.metrics
    outcome.history = outcome.fit.history + [{"step": outcome.fit.steps} | val.metrics]
    sft = session.task_format == TaskFormat.sft
    if sft:
        outcome.example_losses = {"val": val.losses, "test": test.losses}
    else:
        outcome.predictions = {"val": SplitPredictions(val.predicted, val.labels),
                               "test": SplitPredictions(test.predicted, test.labels)}
    # The collapse rule compares with the majority class: an SFT task has no classes, so it never applies.
    outcome.collapsed = False if sft else is_collapsed(outcome.predictions["val"])
    # exact_match is generated at the final evaluation only, so its best step and
    # convergence are judged on the validation loss curve (config/metrics.curve_metric).
    curve = curve_metric(str(cfg.task.metric))
    outcome.best = _best(outcome.fit.history, outcome.metrics, outcome.fit.steps, curve)
    outcome.convergence = still_improving(outcome.fit.history, outcome.fit.steps, curve, val.metrics,
                                          per_example_values(val, curve))
    outcome.merge_max_abs_diff = merge_difference(session)
    if cfg.analysis.enabled:
        from lora_ablate.analysis.run import analyze  # noqa: PLC0415 (only completed runs need it)
        progress.phase("analysis of the trained adapter")
        outcome.analysis, outcome.analysis_seconds = analyze(
            session, resolved.plan, cfg, run_dir=run_dir, test_predicted=None if sft else test.predicted,
            test_losses=test.losses)
    outcome.status = Status.completed


def _record(cfg: RunConfig, resolved: ResolvedRun, config: dict[str, Any], key: RunKey, outcome: Outcome,
            session: Session | None, device: torch.device, started_at: str) -> RunRecord:
    fit_result = outcome.fit
    cost = Cost(
        train_seconds=fit_result.train_seconds, steps=fit_result.steps, train_tokens=fit_result.train_tokens,
        tokens_per_second=fit_result.train_tokens / fit_result.train_seconds if fit_result.train_seconds else None,
        eval_seconds=outcome.eval_seconds, analysis_seconds=outcome.analysis_seconds, peak_memory_bytes=peak_memory_bytes(device), device=str(device),
        precision=session_precision(session),
    )
    return RunRecord(
        status=outcome.status, run_id=key.run_id, labels=key.labels, config=config,
        config_hash=key.config_hash, plan=resolved.plan.to_record(), metrics=outcome.metrics,
        history=outcome.history, best=outcome.best, predictions=outcome.predictions,
        example_losses=outcome.example_losses,
        dropped_completions=dict(session.dropped_completions) if session is not None else {},
        collapsed=outcome.collapsed, convergence=outcome.convergence, analysis=outcome.analysis, cost=cost, provenance=provenance(device, started_at),
        identity=Identity(model=model_identity(cfg.model, resolved), data=data_identity(cfg.task)),
        error=outcome.error, merge_max_abs_diff=outcome.merge_max_abs_diff,
    )


def _headline(record: RunRecord, metric: str) -> str:
    """', test/acc 0.8125' when the record has the task's test metric, else its error."""
    key = f"test/{metric}"
    if key in record.metrics:
        return f", {key} {record.metrics[key]:.4f}"
    return f" ({record.error.type}: {record.error.message})" if record.error else ""


def session_precision(session: Session | None) -> str | None:
    return None if session is None else str(session.precision)


def model_identity(model: ModelConfig, resolved: ResolvedRun) -> ModelIdentity:
    """Which weights a run started from: the package and its checksum, the hub id and the
    commit it resolved to, a local folder, or a random initialisation from a config."""
    if model.package:
        return ModelIdentity(package=model.package, sha256=model.package_sha256, file=model.gguf_file)
    if model.config is not None:
        return ModelIdentity(random_init=True, model_type=resolved.model_config.model_type)
    return ModelIdentity(name_or_path=model.name_or_path, revision=model.revision,
                         commit=getattr(resolved.model_config, "_commit_hash", None), file=model.gguf_file)


def still_improving(history: list[dict[str, float]], steps: int, metric: str, val_metrics: dict[str, float],
                    per_example: list[float]) -> Convergence:
    """The convergence rule (lora_ablate.convergence) on the validation curve, in the metric's
    direction; its tolerance is the standard error of the per-example values."""
    key = f"val/{metric}"
    return convergence(history, final_step=steps, key=key, final_value=val_metrics.get(key, math.nan),
                       per_example=per_example, higher_is_better=higher_is_better(metric))


def per_example_values(val: Evaluation, metric: str) -> list[float]:
    """What the convergence tolerance is the standard error of: each example's NLL per
    completion token (SFT loss), its correct-token share (token accuracy), or its 0/1
    correctness (accuracy, and the scale used for macro-F1, which has no per-example values)."""
    if val.losses is not None:
        return val.losses.mean_nll if metric == "loss" else val.losses.token_accuracy
    return [float(p == y) for p, y in zip(val.predicted, val.labels)]


def is_collapsed(val: SplitPredictions) -> bool:
    """Completed at chance: validation accuracy within two binomial standard errors of the
    majority class's share, on either side."""
    n = len(val.labels)
    if n == 0:
        return False
    majority = max(val.labels.count(c) for c in set(val.labels)) / n
    accuracy = sum(val.correct) / n
    return abs(accuracy - majority) <= 2 * math.sqrt(majority * (1 - majority) / n)


def save_adapter(session: Session, folder: Path) -> None:
    """PEFT's safetensors adapter, written to a temporary folder and renamed into place."""
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    session.model.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


@torch.no_grad()
def merge_difference(session: Session) -> float:
    """Largest |merged - unmerged| output on a test batch: merging must change nothing."""
    session.model.eval()
    batch = collate(session, session.test_items[:32], all_answers=True)
    _, unmerged = forward(session, batch)
    session.model.merge_adapter()
    _, merged = forward(session, batch)
    session.model.unmerge_adapter()
    return float((merged - unmerged).abs().max())


def _best(history: list[dict[str, float]], final: dict[str, float], steps: int, metric: str) -> dict[str, float]:
    key = f"val/{metric}"
    points = [p for p in history if key in p] + [{"step": steps, key: final[key]}]
    sign = 1 if higher_is_better(metric) else -1  # best validation loss is the lowest
    best = max(points, key=lambda p: sign * p[key])
    return {"step": best["step"], key: best[key]}

