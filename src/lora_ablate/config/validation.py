"""Checks of user input that need no training: each raises ConfigError with one paragraph."""

import math

from lora_ablate.config.schema import AnalysisConfig, TrainConfig
from lora_ablate.errors import ConfigError


def check_train_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "eval_batch_size", "grad_accum"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"train.{name} must be a positive integer, got {getattr(cfg, name)}.")
    if cfg.epochs is None and cfg.max_steps <= 0:
        raise ConfigError(f"train.max_steps must be a positive integer, got {cfg.max_steps} (or set train.epochs).")
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise ConfigError(f"train.epochs must be positive, got {cfg.epochs}.")
    if cfg.lr <= 0 or (cfg.head_lr is not None and cfg.head_lr <= 0):
        raise ConfigError(f"train.lr and train.head_lr must be positive, got {cfg.lr} and {cfg.head_lr}.")
    if cfg.schedule not in ("linear", "cosine", "constant"):
        raise ConfigError(f"train.schedule '{cfg.schedule}' is not valid; use linear, cosine or constant.")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision '{cfg.precision}' is not valid; use auto, fp32 or bf16.")
    if cfg.threads is not None and cfg.threads <= 0:
        raise ConfigError(f"train.threads must be a positive integer or null, got {cfg.threads}.")
    if not cfg.grad_clip >= 0:  # also catches nan
        raise ConfigError(f"train.grad_clip must be a maximum gradient norm >= 0 (0: no clipping), got {cfg.grad_clip}.")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}.")


def check_analysis_config(cfg: AnalysisConfig) -> None:
    for name in ("probe_size", "eval_size", "top_k"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"analysis.{name} must be a positive integer, got {getattr(cfg, name)} "
                              "(turn the analysis off with analysis.enabled=false instead).")
    weights = list(cfg.merge_weights)
    if not weights or not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"analysis.merge_weights must be a non-empty list of finite numbers (e.g. [0,0.5,1]), got {weights}.")
