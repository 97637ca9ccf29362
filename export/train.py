"""Training MemSeg on good images plus simulated defects.

Each batch is half good images (target: an empty mask) and half images with a simulated defect (target: the
simulation's mask), MemSeg's recipe. The memory images are drawn from the training folder and kept apart from
the images the network trains on; they travel inside the checkpoint.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge.sidecar import sha256_file
from export.nn.trunk import Trunk, load_resnet18
from export.checkpoint import save_checkpoint
from export.data.images import load_good_images
from export.devices import resolve_device
from export.errors import DataError
from export.nn.losses import memseg_loss
from export.models.memseg.network import MemSeg, MemSegConfig
from export.data.batches import to_batch
from export.data.simulation import DefectSimulator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on; stored in the checkpoint."""

    data: Path
    out: Path
    image_size: int = 256
    memory_samples: int = 30
    iterations: int = 2000
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    device: str = "auto"
    seed: int = 0
    backbone_weights: Path | None = None
    train_trunk: bool = False
    calibrate_batchnorm: bool = False
    memory_refresh: int = 10
    texture_dir: Path | None = None
    use_foreground: bool = False

    def check(self) -> None:
        """Refuse options that cannot work, with the fix."""
        if self.image_size < 64 or self.image_size % 32:
            raise DataError(f"--image-size {self.image_size}: must be a multiple of 32, at least 64")
        if self.batch_size < 2:
            raise DataError(f"--batch-size {self.batch_size}: needs at least 2 (half good, half simulated)")
        if self.memory_samples < 1 or self.iterations < 1 or self.memory_refresh < 1:
            raise DataError("--memory-samples, --iterations and --memory-refresh must be at least 1")


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


def train(options: TrainOptions, progress: bool = True) -> dict:
    """Train, write the checkpoint to ``options.out`` and return the training summary."""
    options.check()
    device = resolve_device(options.device)
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)

    images = load_good_images(options.data, options.image_size)
    memory_index, train_index = split_memory(len(images), options.memory_samples, rng)
    try:
        simulator = DefectSimulator(options.texture_dir, use_foreground=options.use_foreground)
    except ValueError as exc:
        raise DataError(f"--texture-dir: {exc}") from exc

    config = MemSegConfig(
        image_size=options.image_size, memory_samples=options.memory_samples, train_trunk=options.train_trunk
    )
    memory = torch.from_numpy(np.stack([images[i] for i in memory_index]))
    trunk = Trunk(load_resnet18(options.backbone_weights))
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
    started = time.perf_counter()
    model.train()
    bar = tqdm(range(options.iterations), desc="train memseg", unit="it", disable=not progress)
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
        if options.train_trunk and (step + 1) % options.memory_refresh == 0:
            model.refresh_memory()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    if options.train_trunk:
        model.refresh_memory()

    summary = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "backbone_weights_sha256": sha256_file(options.backbone_weights) if options.backbone_weights else None,
        "train_images": len(train_index),
        "memory_images": len(memory_index),
        "loss_first": float(np.mean(losses[: max(1, len(losses) // 10)])),
        "loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "loss_curve": [float(np.mean(c)) for c in np.array_split(losses, min(50, len(losses)))],
        "seconds": round(time.perf_counter() - started, 1),
        "device": str(device),
        "torch": str(torch.__version__),
        "host": platform.node(),
    }
    save_checkpoint(options.out, model, summary)
    log.info("wrote %s after %d iterations (%.0f s)", options.out, options.iterations, summary["seconds"])
    return summary
