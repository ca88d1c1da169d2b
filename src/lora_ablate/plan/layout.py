"""The plan: which modules of a (split) model get LoRA, at which rank, under which budget."""

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lora_ablate import record_plan
from lora_ablate.record_plan import Module
from lora_ablate.plan.budget import allocate_ranks
from lora_ablate.plan.layers import select_layers
from lora_ablate.config.schema import BudgetConfig, LoraSettings
from lora_ablate.errors import ConfigError
from lora_ablate.model.architectures import MATRICES, expand_matrices, layer_pattern, target_set_label

MATRIX_ORDER = {matrix: index for index, matrix in enumerate(MATRICES)}  # canonical order within a layer


@dataclass(frozen=True)
class Plan:
    model_type: str
    target_set: str
    matrices: list[str]
    budget_kind: str
    budget_target: int | None
    modules: list[Module]  # the record's type: planned here, recorded as they are
    head_modules: list[str]
    head_params: int
    base_params: int
    layers: list[int] = field(default_factory=list)  # the adapted layers (targets.layers)
    layer_count: int = 0  # layers the model has
    warnings: list[str] = field(default_factory=list)
    memory_estimate: dict[str, Any] | None = None

    @property
    def lora_params(self) -> int:
        return sum(m.params for m in self.modules)

    @property
    def deviation(self) -> float | None:
        if self.budget_target is None:
            return None
        return (self.lora_params - self.budget_target) / self.budget_target

    def to_record(self) -> record_plan.Plan:
        """The plan as the run record holds it (and a dry run prints it)."""
        memory = self.memory_estimate
        return record_plan.Plan(
            model_type=self.model_type,
            target_set=self.target_set,
            targets=list(self.matrices),
            budget=record_plan.PlanBudget(str(self.budget_kind), self.budget_target, self.lora_params, self.deviation),
            ranks=sorted({m.rank for m in self.modules}),
            layers=list(self.layers),
            layer_count=self.layer_count,
            matrices=self.matrix_summary(),
            modules=list(self.modules),
            lora_params=self.lora_params,
            head_modules=list(self.head_modules),
            head_params=self.head_params,
            base_params=self.base_params,
            warnings=list(self.warnings),
            memory_estimate=None if memory is None else record_plan.MemoryEstimate(**memory),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().to_dict()

    def matrix_summary(self) -> dict[str, record_plan.MatrixSummary]:
        """Per matrix kind: modules, rank range and the share of its modules that got the
        +1 (0 when every module has the same rank)."""
        mixed = len({m.rank for m in self.modules}) > 1
        top = max((m.rank for m in self.modules), default=0)
        out = {}
        for matrix in self.matrices:
            ranks = [m.rank for m in self.modules if m.matrix == matrix]
            plus = sum(r == top for r in ranks) if mixed else 0
            out[matrix] = record_plan.MatrixSummary(
                modules=len(ranks), rank_min=min(ranks), rank_max=max(ranks), plus_one_share=plus / len(ranks))
        return out


@dataclass(frozen=True)
class _Slot:
    name: str
    matrix: str
    layer: int
    d_in: int
    d_out: int


def find_slots(model: nn.Module, arch_map: dict[str, str], matrices: list[str], model_type: str) -> list[_Slot]:
    """Every linear module implementing one of `matrices`, by layer then matrix."""
    slots = []
    for matrix in matrices:
        pattern = layer_pattern(arch_map[matrix])
        found = [
            _Slot(name, matrix, int(match.group(1)), module.in_features, module.out_features)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and (match := pattern.search(name))
        ]
        if not found:
            raise ConfigError(
                f"no linear module of model_type '{model_type}' matches matrix '{matrix}' at "
                f"'<layer>.{arch_map[matrix]}'; check model.matrix_map (module paths inside one "
                f"block, e.g. {_example_paths(model)})."
            )
        slots.extend(found)
    return sorted(slots, key=lambda s: (s.layer, MATRIX_ORDER[s.matrix], s.name))


def budget_target(budget: BudgetConfig, model: nn.Module, arch_map: dict[str, str], model_type: str) -> int | None:
    """The parameter budget every target set of a sweep must meet (None for budget=none).
    The schema (BudgetConfig) has checked the kind, the scale, the rank and budget.params."""
    if budget.kind == "none":
        return None
    if budget.kind == "params":
        return round(budget.params * budget.scale)
    reference = expand_matrices(budget.reference_matrices, arch_map, model_type)
    slots = find_slots(model, arch_map, reference, model_type)
    per_rank = sum(s.d_in + s.d_out for s in slots)
    return round(budget.reference_rank * per_rank * budget.scale)


def make_plan(
    model: nn.Module,
    *,
    model_type: str,
    arch_map: dict[str, str],
    requested: list[str],
    budget: BudgetConfig,
    lora: LoraSettings,
    head_modules: list[str],
    layers: Any = "all",
) -> Plan:
    """Resolve targets, layers and budget on a model whose fused projections are already
    split. The budget is the same whatever `layers` selects: fewer layers, higher ranks."""
    matrices = expand_matrices(requested, arch_map, model_type)
    slots = find_slots(model, arch_map, matrices, model_type)
    layer_count = 1 + max(s.layer for s in slots)
    selected = select_layers(layers, layer_count)
    slots = [s for s in slots if s.layer in set(selected)]
    if not slots:
        raise ConfigError(
            f"targets.layers={layers!r} selects layers {selected}, which hold none of the matrices "
            f"{', '.join(matrices)}; pick layers in 0..{layer_count - 1} that have them."
        )
    target = budget_target(budget, model, arch_map, model_type)
    if target is None:
        ranks = [lora.rank] * len(slots)
    else:
        positions = [(s.layer, MATRIX_ORDER[s.matrix]) for s in slots]
        ranks = allocate_ranks([s.d_in + s.d_out for s in slots], target, positions)
    modules = [Module.at_rank(s.name, s.matrix, s.layer, s.d_in, s.d_out, r) for s, r in zip(slots, ranks)]
    head_params = sum(p.numel() for name in head_modules for p in model.get_submodule(name).parameters())
    base_params = sum(p.numel() for p in model.parameters()) - head_params
    return Plan(
        model_type=model_type,
        target_set=target_set_label(matrices, arch_map, model_type),
        matrices=matrices,
        budget_kind=budget.kind,
        budget_target=target,
        modules=modules,
        head_modules=head_modules,
        head_params=head_params,
        base_params=base_params,
        layers=sorted({s.layer for s in slots}),
        layer_count=layer_count,
        warnings=_rank_warnings(modules),
    )


def _rank_warnings(modules: list[Module]) -> list[str]:
    over = [m for m in modules if m.rank > min(m.d_in, m.d_out)]
    if not over:
        return []
    worst = max(over, key=lambda m: m.rank - min(m.d_in, m.d_out))
    return [
        f"{len(over)} module(s) get a rank above their full rank (e.g. {worst.name}: rank {worst.rank} "
        f"on {worst.d_in}x{worst.d_out}); the extra parameters add no expressiveness."
    ]


def _example_paths(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    block = [n.split(".0.", 1)[1] for n in names if ".0." in n][:6]
    return ", ".join(block) or ", ".join(names[:6])
