"""TrustMAE's memory losses: the trust region [Eq. 5–6] and the addressing margin [Eq. 4]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PULL, PUSH, IGNORE = 1.0, -1.0, 0.0


def trust_region(nearest_distance: torch.Tensor, nearest: torch.Tensor, items: int, far: float) -> torch.Tensor:
    """``r`` per position: +1 (pull the nearest item closer) where ``d₁ ≤ δ₁``, −1 (push it away) where
    ``δ₁ < d₁ ≤ δ₂``, 0 beyond ``δ₂ = far·δ₁``. ``δ₁`` of an item is the mean ``d₁`` of the positions (of this
    batch) whose nearest item it is. The paper's δ₂ is absolute (20, robust over 15–40) on its latent scale; ours
    sits elsewhere (nearest-item distances 35–90 at the CPU preset, so an absolute 20 ignored every position past
    δ₁ and never pushed), so δ₂ is a multiple of δ₁ instead. ``nearest_distance`` and ``nearest`` are ``d₁`` and
    the nearest item's index per position, of any one shape."""
    d1 = nearest_distance.detach().flatten()
    index = nearest.flatten()
    sums = torch.zeros(items, device=d1.device).index_add_(0, index, d1)
    counts = torch.zeros(items, device=d1.device).index_add_(0, index, torch.ones_like(d1))
    delta1 = (sums / counts.clamp_min(1.0))[index]
    r = torch.where(d1 <= delta1, PULL, torch.where(d1 <= far * delta1, PUSH, IGNORE))
    return r.view_as(nearest_distance)


def trust_loss(distances: torch.Tensor, far: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean(r · d₁)`` over the positions, from item distances ``B×N×H×W`` computed on detached features (the
    loss moves the memory items only), with ``δ₂ = far·δ₁``; returns the loss, ``r`` and ``d₁``."""
    d1, nearest = distances.min(dim=1)
    r = trust_region(d1, nearest, distances.shape[1], far)
    return (r * d1).mean(), r, d1


def margin_loss(distances: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """``mean([d₍₁₎ − d₍₂₎ + margin]₊)``: the nearest item should stand out from the second nearest."""
    two = distances.topk(2, dim=1, largest=False).values
    return F.relu(two[:, 0] - two[:, 1] + margin).mean()
