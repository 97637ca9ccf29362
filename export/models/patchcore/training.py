"""Building PatchCore: patch features of every good image, a greedy coreset of them as the memory bank (10 % of
the patches, at most 1,536 vectors: a dozen images at 256 px fill it). No gradient steps; on a 2-core CPU it
takes seconds.
The coreset is picked where the model trains (``--device``); on a GPU a larger ``--max-bank`` is quick too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from export.data.batches import to_batch
from export.errors import DataError
from export.models.patchcore.network import PatchCore, PatchCoreConfig, nearest_in_bank, patch_features
from export.models.registry import TrainRun
from export.nn.coreset import greedy_coreset
from export.nn.smoothing import check_sigma
from export.nn.trunk import build_trunk


@dataclass(frozen=True)
class PatchCoreTraining:
    """How the bank is built; the defaults are the CPU preset."""

    coreset: float = field(default=0.1, metadata={"help": "fraction of all patch features kept in the bank"})
    max_bank: int = field(
        default=1536,
        metadata={"help": "most bank vectors whatever the number of images: bounds the line's time per frame"},
    )
    coreset_projection: int = field(
        default=128,
        metadata={
            "help": "random-projection dimensions for the coreset's distances (none where the features have fewer)"
        },
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={"help": "imagenet, random or a weights file; default: imagenet where installed (efficientnet_lite0)"},
    )
    batch_size: int = field(default=16, metadata={"help": "images per trunk forward pass"})

    def check(self, config: PatchCoreConfig) -> None:
        """Refuse options that cannot work, with the fix."""
        config.level_pair()
        if config.image_size < 32 or config.image_size % 32:
            raise DataError(f"--image-size {config.image_size}: must be a multiple of 32, at least 32")
        check_sigma(config.sigma, config.image_size)
        if not 0.0 < self.coreset <= 1.0:
            raise DataError(f"--coreset {self.coreset}: a fraction in (0, 1], e.g. 0.1")
        if self.batch_size < 1 or self.coreset_projection < 1 or self.max_bank < 1 or config.reweight_neighbours < 2:
            raise DataError(
                "--batch-size, --coreset-projection and --max-bank must be at least 1, --reweight-neighbours 2"
            )


def train_patchcore(run: TrainRun) -> tuple[PatchCore, dict]:
    """Collect the patch features of all good images and keep a greedy coreset of them as the bank."""
    config, options, images = run.config, run.training, run.images
    options.check(config)
    levels = config.level_pair()
    trunk = build_trunk(config.trunk, options.backbone_weights).to(run.device).eval()
    chunks = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(images), options.batch_size), desc="patchcore features", disable=not run.progress
        ):
            batch = to_batch(images[start : start + options.batch_size], run.device)
            features = patch_features(trunk, batch, levels, config.pool_zero_padding)
            chunks.append(features.permute(0, 2, 3, 1).flatten(0, 2).cpu())
    patches = torch.cat(chunks)
    started = time.perf_counter()
    count = max(1, min(round(options.coreset * len(patches)), options.max_bank))
    picked = greedy_coreset(patches, count, run.rng, options.coreset_projection, run.device)
    coreset_seconds = time.perf_counter() - started
    bank = patches[picked]
    neighbours = nearest_in_bank(bank, config.reweight_neighbours) if config.reweight else None
    model = PatchCore(config, trunk.cpu(), bank, neighbours).to(run.device)
    summary = {
        **model.details(),
        "patch_features": len(patches),
        "train_images": len(images),
        "coreset_seconds": round(coreset_seconds, 1),
    }
    return model, summary
