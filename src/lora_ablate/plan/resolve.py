"""From a run config to its plan, with no weights: the dry run, and the check every
sweep cell passes before anything trains."""

from dataclasses import dataclass, replace

from transformers import PretrainedConfig

from lora_ablate.config.schema import RunConfig, TaskFormat
from lora_ablate.model.loading import ModelSource, build_skeleton, head_module_names, load_config, resolve_format, resolve_source
from lora_ablate.plan.layout import Plan, make_plan
from lora_ablate.plan.memory import Shape, estimate_memory, resolved_precision
from lora_ablate.model.surgery import split_fused_projections
from lora_ablate.model.architectures import architecture_map, split_rules_for
from lora_ablate.data.tasks import check_task_config


@dataclass(frozen=True)
class ResolvedRun:
    source: ModelSource
    model_config: PretrainedConfig
    task_format: TaskFormat  # head | label_words | sft
    arch_map: dict[str, str]
    plan: Plan


def resolve_run(cfg: RunConfig) -> ResolvedRun:
    check_task_config(cfg.task)
    source = resolve_source(cfg.model)
    model_config = load_config(cfg.model, source)
    task_format = resolve_format(cfg.task.format, model_config, cfg.model.name)
    arch_map = architecture_map(model_config.model_type, cfg.model.matrix_map)
    skeleton = build_skeleton(model_config, task_format, cfg.task.num_labels, cfg.model.trust_remote_code)
    split_fused_projections(skeleton, split_rules_for(model_config))
    plan = make_plan(
        skeleton,
        model_type=model_config.model_type,
        arch_map=arch_map,
        requested=list(cfg.targets.matrices),
        budget=cfg.budget,
        lora=cfg.lora,
        head_modules=head_module_names(skeleton, task_format),
        layers=cfg.targets.layers,
    )
    plan = replace(plan, memory_estimate=plan_memory(cfg, model_config, task_format, arch_map, plan))
    return ResolvedRun(source, model_config, task_format, arch_map, plan)


def plan_memory(cfg: RunConfig, model_config: PretrainedConfig, task_format: str, arch_map: dict[str, str], plan: Plan) -> dict:
    """The plan's memory estimate at this run's batch size, sequence length and precision."""
    precision = resolved_precision(cfg.train.precision)
    estimate = estimate_memory(
        Shape.of(model_config, gated="ffn_gate" in arch_map),
        base_params=plan.base_params,
        lora_params=plan.lora_params,
        head_params=plan.head_params,
        batch_size=cfg.train.batch_size,
        seq_len=cfg.task.max_length,
        precision=precision,
        label_words=task_format != TaskFormat.head,  # vocabulary logits, at most one row per token (sft too)
        num_labels=cfg.task.num_labels,
    )
    return estimate.to_dict()
