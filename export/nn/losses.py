"""Segmentation losses against a (simulated) defect mask, shared by the models that predict one."""

from __future__ import annotations

import torch


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 4.0, eps: float = 1e-6) -> torch.Tensor:
    """Focal loss (Lin et al.) of 2-channel logits ``B×2×H×W`` against a ``B×H×W`` mask in {0, 1}."""
    p_defect = torch.softmax(logits, dim=1)[:, 1]
    p_true = torch.where(mask > 0.5, p_defect, 1.0 - p_defect).clamp(eps, 1.0)
    return (-((1.0 - p_true) ** gamma) * torch.log(p_true)).mean()


def l1_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the defect probability and the mask."""
    return (torch.softmax(logits, dim=1)[:, 1] - mask).abs().mean()
