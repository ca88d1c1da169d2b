"""A run's working set: the device, the precision, and the model with its adapter and
data, built before the first step so that everything that can fail on user input fails here."""

import resource
from pathlib import Path

import torch
from peft import get_peft_model

from lora_ablate.config.schema import RunConfig, TaskFormat
from lora_ablate.data.encoded import encoded_splits, sft_splits
from lora_ablate.errors import ConfigError
from lora_ablate.model.architectures import split_rules_for
from lora_ablate.model.loading import load_model, load_tokenizer
from lora_ablate.model.surgery import split_fused_projections
from lora_ablate.plan.adapters import lora_config
from lora_ablate.plan.resolve import ResolvedRun
from lora_ablate.run.loop import Session
from lora_ablate.run.pairing import RandomStream, derived_seed, seed_lora_init
from lora_ablate.run.sft_generate import GenerationSettings
from lora_ablate.run.precision import autocast_dtype, hold_frozen_matmul_weights, resolve_precision


def prepare(cfg: RunConfig, resolved: ResolvedRun, device: torch.device) -> Session:
    """Everything that can fail on user input happens here, before the first step."""
    tokenizer = load_tokenizer(cfg.model, resolved.source)
    task = cfg.task
    dropped: dict[str, int] = {}
    if resolved.task_format == TaskFormat.sft:
        data = sft_splits(task, tokenizer)
        dropped = data.dropped
    else:
        data = encoded_splits(task, tokenizer, resolved.task_format)
    precision = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(derived_seed(cfg.seed, RandomStream.head))  # a new head is drawn from the global RNG
    base = load_model(cfg.model, resolved.source, resolved.model_config, resolved.task_format, task.num_labels)
    split_fused_projections(base, split_rules_for(resolved.model_config))
    model = get_peft_model(base, lora_config(resolved.plan, cfg.lora))
    seed_lora_init(model, cfg.seed)  # each module's A from (seed, its name): paired across target sets
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = resolved.plan.lora_params + resolved.plan.head_params
    if trainable != expected:  # PEFT must have built exactly the plan
        raise RuntimeError(f"PEFT made {trainable} trainable parameters, the plan {expected}")
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if precision == "bf16":  # before .to(device): the GPU never holds the fp32 copy
        hold_frozen_matmul_weights(model, torch.bfloat16)
    model.to(device)
    return Session(
        model=model,
        task_format=resolved.task_format,
        num_labels=task.num_labels,
        pad_id=tokenizer.pad_token_id,
        device=device,
        precision=precision,
        autocast_dtype=autocast_dtype(precision),
        train_items=data.train,
        val_items=data.validation,
        test_items=data.test,
        eval_batch_size=cfg.train.eval_batch_size,
        dropped_completions=dropped,
        tokenizer=tokenizer,
        generation=GenerationSettings.from_task(task) if resolved.task_format == TaskFormat.sft else None,
    )


def enable_gradient_checkpointing(model) -> None:
    """Recompute activations in the backward pass (memory for compute, for big models on GPU).
    Non-reentrant checkpointing needs no input that requires grad; the reentrant kind would,
    hence enable_input_require_grads for models that fall back to it."""
    base = model.get_base_model()
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"train.gradient_checkpointing=true, but {type(base).__name__} does not support gradient "
            "checkpointing; set train.gradient_checkpointing=false."
        )
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        base.activation_checkpointing_enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: reset VmHWM, so a sweep's earlier runs in this process do not count
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated, or the process's peak resident memory since the reset."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss survives fork+exec
