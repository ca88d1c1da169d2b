"""The learned update ΔW = scaling · B A of every adapted module (LoRA paper §7):
its singular values, size relative to W, effective rank, and how much it amplifies
directions W already has."""

import math
from dataclasses import dataclass

import torch

from lora_ablate.analysis.lora_modules import Adapted, base_weight, delta_factors


@dataclass(frozen=True)
class UpdateSpectrum:
    singular_values: list[float]  # of ΔW, descending, at most top_k
    relative_norm: float  # ‖ΔW‖_F / ‖W‖_F
    effective_rank: float  # exp(entropy of σ_i / Σσ) (Roy & Vetterli 2007); 1..rank
    amplification: float  # ‖ΔW‖_F / ‖Uᵀ W V‖_F, U, V: ΔW's top-r singular vectors
    left: torch.Tensor  # U[:, :top_k], (d_out, k)
    right: torch.Tensor  # V[:, :top_k], (d_in, k)


@torch.no_grad()
def delta_svd(b: torch.Tensor, a: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of scaling · B A without forming it: B = Q_b R_b, Aᵀ = Q_a R_a, so
    ΔW = Q_b (scaling · R_b R_aᵀ) Q_aᵀ and only an r × r matrix is decomposed."""
    q_b, r_b = torch.linalg.qr(b.double())
    q_a, r_a = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(scaling * r_b @ r_a.T)
    return q_b @ u, s, q_a @ vh.T


def effective_rank(s: torch.Tensor) -> float:
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


@torch.no_grad()
def spectrum(adapted: Adapted, top_k: int) -> UpdateSpectrum:
    b, a, scaling = delta_factors(adapted.module)
    u, s, v = delta_svd(b, a, scaling)
    w = base_weight(adapted.module).double()
    delta_norm = float(s.norm())
    projected = float((u.T @ w @ v).norm())  # W restricted to ΔW's r-dimensional subspaces
    k = min(top_k, s.numel())
    return UpdateSpectrum(
        singular_values=[float(x) for x in s[:k]],
        relative_norm=delta_norm / float(w.norm()),
        effective_rank=effective_rank(s),
        amplification=delta_norm / projected if projected > 0 else math.inf,
        left=u[:, :k].to(torch.float16).cpu().contiguous(),
        right=v[:, :k].to(torch.float16).cpu().contiguous(),
    )


def update_analysis(modules: list[Adapted], top_k: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Compact per-module numbers for the record, and the singular vectors (fp16) keyed
    `<module>.left` / `<module>.right` for analysis.safetensors."""
    rows, tensors = [], {}
    for adapted in modules:
        spec = spectrum(adapted, top_k)
        rows.append({
            "name": adapted.name, "matrix": adapted.matrix, "layer": adapted.layer, "rank": adapted.rank,
            "singular_values": spec.singular_values, "relative_norm": spec.relative_norm,
            "effective_rank": spec.effective_rank, "amplification": spec.amplification,
        })
        tensors[f"{adapted.name}.left"] = spec.left
        tensors[f"{adapted.name}.right"] = spec.right
    return rows, tensors
