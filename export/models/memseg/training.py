"""Training MemSeg on good images plus simulated defects.

Each batch is half good images (target: an empty mask) and half images with a simulated defect (target: the
simulation's mask), MemSeg's recipe; the loss is 0.6·L1 + 0.4·focal (γ = 4). The memory images are drawn from
the training folder and kept apart from the images the network trains on; they travel inside the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export.data.batches import to_batch
from export.data.simulation import DefectSimulator
from export.errors import DataError
from export.models.memseg.network import MemSeg, MemSegConfig
from export.models.registry import TrainRun
from export.nn.losses import focal_loss, l1_loss
from export.nn.trunk import build_trunk


@dataclass(frozen=True)
class MemSegTraining:
    """How MemSeg trains; the defaults are the GPU preset's recipe (docs/models.md gives the CPU preset's flags)."""

    iterations: int = field(default=2000, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=8, metadata={"help": "half good, half simulated defects"})
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    backbone_weights: str | None = field(
        default=None,
        metadata={
            "help": "the trunk's weights: imagenet, random or a file; default: imagenet where it installs with the "
            "package (efficientnet_lite0), random otherwise (resnet18)"
        },
    )
    calibrate_batchnorm: bool = field(
        default=False,
        metadata={"help": "set the trunk's BatchNorm statistics from the good images first (for a random trunk)"},
    )
    memory_refresh: int = field(
        default=10, metadata={"help": "iterations between memory refreshes when the trunk trains"}
    )
    texture_dir: Path | None = field(default=None, metadata={"help": "texture images for defect simulation"})
    use_foreground: bool = field(default=False, metadata={"help": "simulate defects on the object only"})

    def check(self, config: MemSegConfig) -> None:
        """Refuse options that cannot work, with the fix."""
        if config.image_size < 64 or config.image_size % 32:
            raise DataError(f"--image-size {config.image_size}: must be a multiple of 32, at least 64")
        if self.batch_size < 2:
            raise DataError(f"--batch-size {self.batch_size}: needs at least 2 (half good, half simulated)")
        if config.memory_samples < 1 or self.iterations < 1 or self.memory_refresh < 1:
            raise DataError("--memory-samples, --iterations and --memory-refresh must be at least 1")


def memseg_loss(
    logits: torch.Tensor, mask: torch.Tensor, l1_weight: float = 0.6, focal_weight: float = 0.4
) -> torch.Tensor:
    """MemSeg's training loss: 0.6·L1 + 0.4·focal(γ = 4)."""
    return l1_weight * l1_loss(logits, mask) + focal_weight * focal_loss(logits, mask)


def learning_rate_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def split_memory(count: int, memory_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the memory images and of the images left for training."""
    if count < memory_samples + 2:
        raise DataError(
            f"{count} good images for {memory_samples} memory samples: training needs at least "
            f"{memory_samples + 2}; add good images or lower --memory-samples"
        )
    order = rng.permutation(count)
    return np.sort(order[:memory_samples]), np.sort(order[memory_samples:])


def train_memseg(run: TrainRun) -> tuple[MemSeg, dict]:
    """Train MemSeg; returns the model (memory refreshed) and what the checkpoint should record."""
    config, options, images, rng, device = run.config, run.training, run.images, run.rng, run.device
    options.check(config)
    memory_index, train_index = split_memory(len(images), config.memory_samples, rng)
    try:
        simulator = DefectSimulator(options.texture_dir, use_foreground=options.use_foreground)
    except ValueError as exc:
        raise DataError(f"--texture-dir: {exc}") from exc
    memory = torch.from_numpy(np.stack([images[i] for i in memory_index]))
    trunk = build_trunk(config.trunk, options.backbone_weights)
    if options.calibrate_batchnorm:
        trunk.calibrate_batchnorm([to_batch(images[i : i + 16]) for i in range(0, min(len(images), 128), 16)])
    model = MemSeg(config, trunk, memory).to(device)
    model.refresh_memory()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, options.iterations, options.warmup_fraction)
    )
    n_good = options.batch_size // 2
    losses: list[float] = []
    model.train()
    bar = tqdm(range(options.iterations), desc="train memseg", unit="it", disable=not run.progress)
    for step in bar:
        picks = rng.choice(train_index, size=options.batch_size)
        batch, masks = [], []
        for j, i in enumerate(picks):
            if j < n_good:
                batch.append(images[i])
                masks.append(np.zeros(images[i].shape[:2], np.float32))
            else:
                augmented, mask = simulator(images[i], rng)
                batch.append(augmented)
                masks.append(mask)
        logits = model(to_batch(batch, device))
        loss = memseg_loss(logits, torch.from_numpy(np.stack(masks)).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if config.train_trunk and (step + 1) % options.memory_refresh == 0:
            model.refresh_memory()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    if config.train_trunk:
        model.refresh_memory()
    summary = {
        **trunk.details(),
        "train_images": len(train_index),
        "memory_images": len(memory_index),
        "loss_first": float(np.mean(losses[: max(1, len(losses) // 10)])),
        "loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "loss_curve": [float(np.mean(c)) for c in np.array_split(losses, min(50, len(losses)))],
    }
    return model, summary
