"""Attention to the patches of one constant reference feature map (RB-AE's reference-based feature repair).

The input's features are cut into non-overlapping ``K×K×C`` patches ``p_i``, the reference's likewise into ``b_j``;
each input patch is replaced by ``p̄_i = Σ_j softmax_j(t·cos(p_i, b_j)) b_j`` (Luo et al., Eq. 3–5, with the
temperature ``t`` of contextual attention).

The reference is constant, so its two patch banks are stored once (:meth:`ReferenceAttention.store`): the raw bank
``B`` (``M×K²C``) and the transposed unit-norm bank ``B̂ᵀ`` (``K²C×M``). The one forward pass is then
SpaceToDepth(K) → normalise (FP32: a sum of up to 4,096 squares leaves FP16's range) → MatMul(P̂, B̂ᵀ) → Softmax →
MatMul(·, B) → DepthToSpace(K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_FLOOR = 1e-8  # a patch of all zeros gets norm NORM_FLOOR: cosine 0 with every bank patch


def split_patches(features: torch.Tensor, patch: int) -> torch.Tensor:
    """``B×C×H×W`` → ``B×N×K²C``: non-overlapping ``K×K`` patches in row-major order (SpaceToDepth)."""
    return F.pixel_unshuffle(features, patch).flatten(2).transpose(1, 2)


def join_patches(patches: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`split_patches` (DepthToSpace)."""
    grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, height // patch, width // patch)
    return F.pixel_shuffle(grid, patch)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` divided by the L2 norm of its last axis, in FP32."""
    x = x.float()
    return x / x.pow(2).sum(dim=-1, keepdim=True).sqrt().clamp_min(NORM_FLOOR)


class ReferenceAttention(nn.Module):
    """Repairs ``B×C×H×W`` features with the ``K×K`` patches of a stored reference feature map (same C)."""

    def __init__(self, patch: int, temperature: float = 10.0) -> None:
        super().__init__()
        self.patch, self.temperature = patch, temperature
        self.register_buffer("bank", torch.zeros(0), persistent=False)  # M×K²C raw reference patches
        self.register_buffer("unit_bank_t", torch.zeros(0), persistent=False)  # K²C×M, unit-norm columns

    @torch.no_grad()
    def store(self, reference: torch.Tensor) -> None:
        """Keep the patch banks of ``reference`` (``1×C×H×W``, H and W multiples of K)."""
        bank = split_patches(reference.detach().float(), self.patch)[0]
        self.bank = bank.clone()
        self.unit_bank_t = unit_rows(bank).t().contiguous()

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """Attention ``B×N×M`` of every input patch over the reference patches (FP32)."""
        similarity = torch.matmul(unit_rows(split_patches(features, self.patch)), self.unit_bank_t)
        return torch.softmax(self.temperature * similarity, dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        repaired = torch.matmul(self.weights(features), self.bank)
        return join_patches(repaired, self.patch, *features.shape[2:]).to(features.dtype)
