"""One run, end to end: data, model, adapter, training, evaluation, record."""

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lora_ablate.config.schema import RunConfig
from lora_ablate.run.loggers import open_logger
from lora_ablate.plan.resolve import ResolvedRun
from lora_ablate.run.provenance import config_hash, now_iso, provenance
from lora_ablate.records import completed_record, write_record
from lora_ablate.run.loop import FitResult, Session, collate, evaluate, fit, forward
from lora_ablate.run.session import peak_memory_bytes, pick_device, prepare, reset_peak_memory
from lora_ablate.config.validation import check_train_config

log = logging.getLogger(__name__)
# PEFT still calls this renamed transformers method; the warning is noise for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class JobSlot:
    """Where a run sits in a sweep: its job number and how many jobs run at once."""

    index: int = 0
    parallel_jobs: int = 1


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    run_dir: Path
    config: dict[str, Any]  # resolved, as recorded
    config_hash: str
    variant: str = ""  # overrides beyond the labels that set the run apart


def identity(
    cfg: RunConfig, config: dict[str, Any], run_dir: Path, plan_label: str, variant: str = ""
) -> RunIdentity:
    scale = f"x{cfg.budget.scale:g}" if cfg.budget.scale != 1 else ""
    run_id = (
        f"model={cfg.model.name},task={cfg.task.name},targets={plan_label},"
        f"budget={cfg.budget.kind}{scale},seed={cfg.seed}" + (f",{variant}" if variant else "")
    )
    return RunIdentity(run_id, run_dir, config, config_hash(config), variant)


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


def run(cfg: RunConfig, resolved: ResolvedRun, ident: RunIdentity, job: JobSlot | None = None) -> dict[str, Any]:
    """Train one cell, or return its metrics when a completed record of the same config exists."""
    done = completed_record(ident.run_dir, ident.config_hash)
    if done is not None:
        log.info("skipping %s: completed record with the same config exists", ident.run_id)
        return done["metrics"]
    check_train_config(cfg.train)
    job = job or JobSlot()
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // job.parallel_jobs)
    torch.set_num_threads(threads)  # parallel jobs must not oversubscribe the cores
    device = pick_device(cfg.train.device, job.index)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reset_peak_memory(device)
    started_at = now_iso()
    session = prepare(cfg, resolved, device)
    plan = resolved.plan
    record: dict[str, Any] = {
        "run_id": ident.run_id,
        "labels": {
            "model": cfg.model.name,
            "task": cfg.task.name,
            "target_set": plan.target_set,
            "budget": cfg.budget.kind,
            "budget_scale": cfg.budget.scale,
            "variant": ident.variant,
            "seed": cfg.seed,
        },
        "config": ident.config,
        "config_hash": ident.config_hash,
        "plan": plan.to_dict(),
        "metrics": {},
        "history": [],
        "error": None,
    }
    logger = open_logger(
        cfg.logger,
        name=ident.run_id,
        group=cfg.sweep_name,
        job_type=plan.target_set,
        config=ident.config,
        run_dir=ident.run_dir,
    )
    result = FitResult()
    try:
        result = fit(session, cfg.train, seed=cfg.seed, head_names=plan.head_modules, logger=logger)
        record["history"] = result.history
        if result.diverged_at is not None:
            record["status"] = "diverged"
            record["error"] = {"type": "Diverged", "message": f"loss became NaN or inf by step {result.diverged_at}"}
        else:
            record["metrics"] = _final_metrics(session)
            final_val = {k: v for k, v in record["metrics"].items() if k.startswith("val/")}
            record["history"] = result.history + [{"step": result.steps} | final_val]
            record["best"] = _best(result.history, record["metrics"], result.steps, cfg.task.metric)
            record["merge_max_abs_diff"] = merge_difference(session)
            record["status"] = "completed"
            if cfg.save_adapter:
                session.model.save_pretrained(ident.run_dir / "adapter", safe_serialization=True)
    except BaseException as err:  # a record of every run that started, also on Ctrl-C
        record["status"] = "failed"
        record["error"] = {"type": type(err).__name__, "message": str(err) or repr(err)}
        raise
    finally:
        record["cost"] = {
            "train_seconds": result.train_seconds,
            "steps": result.steps,
            "train_tokens": result.train_tokens,
            "tokens_per_second": result.train_tokens / result.train_seconds if result.train_seconds else None,
            "peak_memory_bytes": peak_memory_bytes(device),
            "device": str(device),
            "precision": "bf16" if session.autocast_dtype == torch.bfloat16 else "fp32",
        }
        record["provenance"] = provenance(device, started_at)
        write_record(ident.run_dir, record)
        logger.finish(record["metrics"])
    return record["metrics"]


def _final_metrics(session: Session) -> dict[str, float]:
    return evaluate(session, session.val_items, "val") | evaluate(session, session.test_items, "test")


def _best(history: list[dict[str, float]], final: dict[str, float], steps: int, metric: str) -> dict[str, float]:
    key = f"val/{metric}"
    points = [p for p in history if key in p] + [{"step": steps, key: final[key]}]
    best = max(points, key=lambda p: p[key])
    return {"step": best["step"], key: best[key]}
