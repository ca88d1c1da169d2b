"""Which torch device a run trains on, checked against this machine before anything loads
(the schema has checked the form: auto | cpu | cuda | cuda:N | mps)."""

import torch

from lora_ablate.errors import ConfigError


def pick_device(requested: str, job_index: int = 0) -> torch.device:
    """`auto`: CUDA when present, spreading parallel jobs of a sweep over the GPUs."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", job_index % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={requested} but CUDA is not available here; use train.device=auto or cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={requested} but this machine has {torch.cuda.device_count()} GPU(s), "
                          f"numbered from 0; use train.device=cuda (GPU 0) or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device={requested} but Apple's MPS is not available here; use train.device=auto or cpu.")
    return device
