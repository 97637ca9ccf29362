"""A learned memory of normal codes read by sparse addressing (MemAE, Gong et al. 2019; CMA-AE, Luo et al.).

A code ``z ∈ ℝ^D`` is replaced by a combination of ``N`` learned items ``m_i``:

* ``w = softmax_i(cos(z, m_i))``;
* hard shrinkage ``ŵ = w·[w > 1/N]``, renormalised by its L1 sum. This is MemAE's continuous shrinkage
  ``max(w − λ, 0)·w / (|w − λ| + ε)`` with ``λ = 1/N`` as ``ε → 0``; the sum is clamped away from zero, so a code
  whose weights are all exactly ``1/N`` reads the zero vector instead of dividing by zero;
* ``ẑ = ŵ M``.

The read is written once. For export, :meth:`SparseMemory.fold` stores the unit-norm items ``M̂ = M/‖M‖`` as a
constant, so the graph is: normalise z (FP32) → Gemm with M̂ → Softmax → mask → L1 renormalise → Gemm with M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUM_FLOOR = 1e-12  # the renormalisation divides by at least this


class SparseMemory(nn.Module):
    """``N`` learned items of dimension ``D``; ``forward(z B×D) -> (ẑ B×D, ŵ B×N)`` in FP32."""

    def __init__(self, items: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / dim**0.5
        self.items = nn.Parameter(torch.empty(items, dim).uniform_(-bound, bound))
        self.register_buffer("unit_items", None, persistent=False)  # M̂ once folded for export

    @property
    def threshold(self) -> float:
        """The shrinkage threshold 1/N."""
        return 1.0 / self.items.shape[0]

    def fold(self) -> None:
        """Keep ``M/‖M‖`` as a constant (export and frozen use); the items stop training."""
        self.items.requires_grad_(False)
        self.unit_items = F.normalize(self.items.detach().float(), dim=1)

    def addressing(self, z: torch.Tensor) -> torch.Tensor:
        """Sparse weights ``ŵ`` (``B×N``, rows summing to 1 unless all weights were exactly 1/N)."""
        unit = self.unit_items if self.unit_items is not None else F.normalize(self.items, dim=1)
        w = torch.softmax(F.linear(F.normalize(z.float(), dim=1), unit), dim=1)
        kept = w * (w > self.threshold).to(w.dtype)
        return kept / kept.sum(dim=1, keepdim=True).clamp_min(SUM_FLOOR)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.addressing(z)
        return weights @ self.items.float(), weights


def addressing_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy ``−Σ ŵ log ŵ`` of the rows of ``weights`` (zero weights add nothing): MemAE's sparsity loss."""
    return -(weights * torch.log(weights.clamp_min(SUM_FLOOR))).sum(dim=1).mean()
