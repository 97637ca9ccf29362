"""A memory of learnt items read by soft top-k addressing (MemAE, TrustMAE), written without a Gather.

Each feature vector ``z`` (a position of a ``B×C×H×W`` map) is replaced by ``ẑ = ŵ M``: ``w = softmax(−‖z − mᵢ‖₂)``
over the ``N`` items ``M ∈ ℝ^{N×C}``, with only the ``k`` largest weights kept and renormalised. The items are
parameters: they change only through gradients.

The one forward pass is written with operators every runtime has and no index lookup:

* distances: ``d² = ‖z‖² − 2 z Mᵀ + ‖M‖²`` is a 1×1 convolution (weights ``−2M``, bias ``‖M‖²``) plus the sum of
  squares of ``z``, floored at a tiny positive value, then a square root, all in FP32 (``‖z‖²`` leaves FP16's
  range for ``‖z‖ > 256``);
* exact top-k: TopK gives the k-th smallest distance ``t``; ``logits = −d − 10⁴·[d > t]``; a Softmax over the
  items (``exp(−10⁴)`` is exactly 0, so the result is the renormalised top-k softmax);
* the read: a 1×1 convolution of the weights with ``Mᵀ``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK = 1e4  # added to the distance of every item outside the top k: its softmax weight is exactly 0
FLOOR = 1e-12  # d² is floored here, not at 0, so the square root keeps a finite gradient


class SoftMemory(nn.Module):
    """``N`` items of dimension ``C`` read with soft top-``k`` addressing; ``forward(z) → (ẑ, d)`` with the
    distances ``d`` (``B×N×H×W``) for the losses that need them.

    ``addressed`` counts, per item, the positions whose top-k held it while ``counting`` is on; :meth:`prune`
    keeps only the items counted.
    """

    def __init__(self, items: int, channels: int, top_k: int = 3) -> None:
        super().__init__()
        if not 1 <= top_k <= items:
            raise ValueError(f"top_k {top_k} must lie in [1, {items}]")
        self.top_k = top_k
        self.items = nn.Parameter(torch.randn(items, channels) / math.sqrt(channels))
        self.register_buffer("addressed", torch.zeros(items))
        self.counting = False

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of every position of ``z`` (``B×C×H×W``) to every item: ``B×N×H×W``, FP32."""
        z = z.float()
        m = self.items.float()
        cross = F.conv2d(z, (-2.0 * m)[:, :, None, None], bias=m.pow(2).sum(dim=1))
        return (cross + z.pow(2).sum(dim=1, keepdim=True)).clamp_min(FLOOR).sqrt()

    def weights(self, distances: torch.Tensor) -> torch.Tensor:
        """Softmax of ``−d`` over the items, restricted to the ``k`` nearest (the others weigh exactly 0)."""
        kth = distances.topk(self.top_k, dim=1, largest=False).values[:, -1:]
        outside = (distances > kth).to(distances.dtype)
        return torch.softmax(-distances - MASK * outside, dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distances = self.distances(z)
        weights = self.weights(distances)
        if self.counting:
            with torch.no_grad():
                self.addressed += (weights > 0).sum(dim=(0, 2, 3)).to(self.addressed.dtype)
        read = F.conv2d(weights, self.items.float().t()[:, :, None, None])
        return read.to(z.dtype), distances

    @torch.no_grad()
    def prune(self) -> int:
        """Drop the items never counted as addressed (at least ``k`` are kept); returns how many remain."""
        keep = self.addressed > 0
        if int(keep.sum()) < self.top_k:
            keep = self.addressed >= self.addressed.topk(self.top_k).values[-1]
        self.items = nn.Parameter(self.items[keep].clone(), requires_grad=self.items.requires_grad)
        self.addressed = self.addressed[keep].clone()
        return int(keep.sum())
