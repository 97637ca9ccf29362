"""Images normalised one way, re-normalised the way a frozen trunk expects: ``x · scale + shift``, in FP32."""

from __future__ import annotations

import torch
from torch import nn

from export.data.batches import IMAGENET, Normalisation


class Renormalise(nn.Module):
    """``forward(x)``: ``x`` normalised as ``source`` (mean, std per channel) → normalised as ``target``."""

    def __init__(self, source: Normalisation, target: Normalisation = IMAGENET) -> None:
        super().__init__()
        (mean, std), (target_mean, target_std) = (
            (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in n) for n in (source, target)
        )
        self.register_buffer("scale", std / target_std, persistent=False)
        self.register_buffer("shift", (mean - target_mean) / target_std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale + self.shift
