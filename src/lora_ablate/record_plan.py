"""The plan as the run record holds it (the `plan` section of result.json, and what a dry
run prints): every adapted module with its matrix, layer, shape, rank and parameter count,
the budget and the deviation from it. plan/layout.py resolves a plan on a model and
converts it to this type; the report reads this type. No torch here."""

from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from lora_ablate.record_fields import items, known, mapping, optional_float, optional_int


class Module(NamedTuple):
    """One adapted linear module (a NamedTuple: a report reads 10,000s of them per sweep)."""

    name: str
    matrix: str
    layer: int
    d_in: int
    d_out: int
    rank: int
    params: int  # rank * (d_in + d_out)

    @classmethod
    def at_rank(cls, name: str, matrix: str, layer: int, d_in: int, d_out: int, rank: int) -> "Module":
        """The module as the planner assigns it `rank` (its parameter count follows)."""
        return cls(name, matrix, layer, d_in, d_out, rank, rank * (d_in + d_out))


@dataclass(frozen=True)
class PlanBudget:
    kind: str | None = None  # reference | params | none
    target: int | None = None  # trainable LoRA parameters every target set must meet; None: no budget
    actual: int | None = None
    deviation: float | None = None  # (actual - target) / target


@dataclass(frozen=True)
class MatrixSummary:
    """Per matrix kind: how many modules, their rank range, and the share of them that got
    the +1 of a budget that whole ranks cannot meet exactly."""

    modules: int
    rank_min: int
    rank_max: int
    plus_one_share: float


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory estimated before the run (plan/memory.py), in bytes."""

    precision: str | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    base_weights_bytes: int | None = None
    lora_weights_bytes: int | None = None
    lora_grads_bytes: int | None = None
    lora_optimizer_bytes: int | None = None
    head_bytes: int | None = None
    activations_bytes: int | None = None
    total_bytes: int | None = None
    total_gib: float | None = None


@dataclass(frozen=True)
class Plan:
    """A run's adapter layout. Numbers are None in records that did not hold them."""

    model_type: str | None = None
    target_set: str | None = None  # the `targets` option the matrices equal, e.g. qkv_ffn
    targets: list[str] = field(default_factory=list)  # concrete matrices, e.g. [q, k, v, ffn_up, ffn_down]
    budget: PlanBudget = field(default_factory=PlanBudget)
    ranks: list[int] = field(default_factory=list)  # distinct ranks, ascending
    layers: list[int] = field(default_factory=list)  # the adapted layers
    layer_count: int | None = None  # layers the model has
    matrices: dict[str, MatrixSummary] = field(default_factory=dict)
    modules: list[Module] = field(default_factory=list)
    lora_params: int | None = None
    head_modules: list[str] = field(default_factory=list)
    head_params: int | None = None  # the task head, trained but counted apart from the budget
    base_params: int | None = None
    warnings: list[str] = field(default_factory=list)
    memory_estimate: MemoryEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self) | {"modules": [m._asdict() for m in self.modules]}
        if self.memory_estimate is None:
            del data["memory_estimate"]  # written only when estimated
        return data

    @classmethod
    def from_dict(cls, value: Any) -> "Plan":
        data = mapping(value, "plan")
        memory = data.get("memory_estimate")
        return known(
            cls, data, "plan",
            targets=[str(m) for m in items(data.get("targets"), "plan.targets")],
            budget=_budget(data.get("budget")),
            ranks=[int(r) for r in items(data.get("ranks"), "plan.ranks")],
            layers=[int(i) for i in items(data.get("layers"), "plan.layers")],
            layer_count=optional_int(data.get("layer_count")),
            matrices={k: known(MatrixSummary, v, f"plan.matrices.{k}")
                      for k, v in mapping(data.get("matrices"), "plan.matrices").items()},
            modules=_modules(items(data.get("modules"), "plan.modules")),
            lora_params=optional_int(data.get("lora_params")),
            head_modules=[str(m) for m in items(data.get("head_modules"), "plan.head_modules")],
            head_params=optional_int(data.get("head_params")),
            base_params=optional_int(data.get("base_params")),
            warnings=[str(w) for w in items(data.get("warnings"), "plan.warnings")],
            memory_estimate=None if memory is None else known(MemoryEstimate, memory, "plan.memory_estimate"),
        )

    def rank_text(self) -> str | None:
        """The distinct LoRA ranks for display: "8", or "4–5" when they differ."""
        ranks = {m.rank for m in self.modules}
        if not ranks:
            return None
        low, high = min(ranks), max(ranks)
        return str(low) if low == high else f"{low}–{high}"


def _budget(value: Any) -> PlanBudget:
    data = mapping(value, "plan.budget")
    return PlanBudget(kind=None if data.get("kind") is None else str(data["kind"]),
                      target=optional_int(data.get("target")), actual=optional_int(data.get("actual")),
                      deviation=optional_float(data.get("deviation")))


_MODULE_VALUES = itemgetter(*Module._fields)  # always one value per field, so no length check
_new_tuple = tuple.__new__


def _modules(values: list[Any]) -> list[Module]:
    try:  # the fast path (C-level lookups): every module an object with the fields
        return [_new_tuple(Module, _MODULE_VALUES(m)) for m in values]
    except (KeyError, TypeError):  # say which module is malformed
        return [known(Module, m, "plan.modules") for m in values]
