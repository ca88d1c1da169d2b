"""Where a result came from: versions, commit, machine and time."""

import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
import torch

from lora_ablate.records import Provenance

PACKAGES = ("lora-ablate", "torch", "transformers", "peft", "hydra-core", "omegaconf", "safetensors", "tokenizers")
def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def provenance(device: torch.device, started_at: str) -> Provenance:
    versions = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return Provenance(
        versions=versions,
        git_commit=git_commit(),
        device_name=device_name(device),
        torch_threads=torch.get_num_threads(),
        hostname=socket.gethostname(),
        argv=list(sys.argv),
        started_at=started_at,
        ended_at=now_iso(),
    )
