"""From a run config to its plan, with no weights: the dry run, and the check every
sweep cell passes before anything trains."""

from dataclasses import dataclass

from transformers import PretrainedConfig

from lora_ablate.config.schema import RunConfig
from lora_ablate.model.loading import ModelSource, build_skeleton, head_module_names, load_config, resolve_format, resolve_source
from lora_ablate.plan.layout import Plan, make_plan
from lora_ablate.model.surgery import split_fused_projections
from lora_ablate.model.architectures import architecture_map
from lora_ablate.data.tasks import check_task_config


@dataclass(frozen=True)
class ResolvedRun:
    source: ModelSource
    model_config: PretrainedConfig
    task_format: str  # head | label_words
    arch_map: dict[str, str]
    plan: Plan


def resolve_run(cfg: RunConfig) -> ResolvedRun:
    check_task_config(cfg.task)
    source = resolve_source(cfg.model)
    model_config = load_config(cfg.model, source)
    task_format = resolve_format(cfg.task.format, model_config)
    arch_map = architecture_map(model_config.model_type, cfg.model.matrix_map)
    skeleton = build_skeleton(model_config, task_format, cfg.task.num_labels, cfg.model.trust_remote_code)
    split_fused_projections(skeleton, model_config)
    plan = make_plan(
        skeleton,
        model_type=model_config.model_type,
        arch_map=arch_map,
        requested=list(cfg.targets.matrices),
        budget=cfg.budget,
        lora=cfg.lora,
        head_modules=head_module_names(skeleton, task_format),
    )
    return ResolvedRun(source, model_config, task_format, arch_map, plan)
