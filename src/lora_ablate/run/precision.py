"""Which precision a run trains in, and holding the frozen base in it.

bf16 runs under autocast: matmuls in bf16, everything else (norms, softmax, the loss,
the residual stream) in fp32. The frozen weights that autocast would cast to bf16 on every
call (those of Linear / Conv1D layers) are held in bf16 instead, which gives the same
numbers without the per-step casts. LoRA weights, the head, optimizer states, embeddings
and norms stay fp32.
"""

import functools
from pathlib import Path

import torch
from torch import nn


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX; oneDNN's check
    covers ARM too). Without it bf16 matmuls are emulated and slower than fp32."""
    try:
        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            flags = _cpu_flags()
            # oneDNN also says yes for plain AVX512 (emulated bf16): require the real instructions
            return flags is None or bool({"avx512_bf16", "amx_bf16"} & flags) or "bf16" in flags
    except (AttributeError, RuntimeError):
        pass
    return False


def _cpu_flags() -> set[str] | None:
    """x86 flags or ARM features from /proc/cpuinfo; None where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return None


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: bf16 on CUDA (where the GPU supports it) and on CPUs with native bf16, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    return torch.bfloat16 if precision == "bf16" else None


def hold_frozen_matmul_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen weights of matmul layers (Linear, transformers' Conv1D) to `dtype`;
    returns how many parameters were cast. A weight tied to an embedding (a decoder's
    lm_head) stays fp32: casting it would put the embedding, and so the residual stream,
    in bf16, which plain autocast does not do."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    cast = 0
    for module in model.modules():
        if not _is_matmul(module):
            continue
        for param in module.parameters(recurse=False):
            if param.requires_grad or id(param) in embedding_weights or not param.is_floating_point():
                continue
            param.data = param.data.to(dtype)
            cast += param.numel()
    return cast


def _is_matmul(module: nn.Module) -> bool:
    # Conv1D (GPT-2's fused projections) is a Linear with a transposed weight, run by addmm
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
