"""The shared score head: an anomaly map → one image score (mean of the k highest pixels, or the maximum)."""

from __future__ import annotations

import torch
from torch import nn

SCORE_HEADS = ("top_k_mean", "max")


def top_k_mean(maps: torch.Tensor, k: int = 100) -> torch.Tensor:
    """Mean of the ``k`` highest values of each map (``B×…`` → ``B``)."""
    flat = maps.reshape(maps.shape[0], -1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


class ScoreHead(nn.Module):
    """Image score from a ``B×1×S×S`` map in FP32: ``top_k_mean`` (MemSeg's choice) or ``max``."""

    def __init__(self, kind: str = "top_k_mean", k: int = 100) -> None:
        super().__init__()
        if kind not in SCORE_HEADS:
            raise ValueError(f"score head {kind!r}: use one of {', '.join(SCORE_HEADS)}")
        self.kind, self.k = kind, k

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()
        if self.kind == "max":
            return maps.flatten(1).amax(dim=1)
        return top_k_mean(maps, self.k)
