"""Image score from an anomaly map: MemSeg's mean of the k highest pixels."""

from __future__ import annotations

import torch


def top_k_mean(maps: torch.Tensor, k: int = 100) -> torch.Tensor:
    """Mean of the ``k`` highest values of each map (``B×…`` → ``B``)."""
    flat = maps.reshape(maps.shape[0], -1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)
