"""Building PatchCore: patch features of every good image, a greedy coreset of them as the memory bank (as many
vectors as 10 % of the images' own patches, at most 1,536: a dozen images at 256 px fill it). No gradient steps:
on a 2-core CPU under a minute for 60 images at 256 px.
The bank is picked from each good image's eight turns and mirror images (``views=dihedral``): a random share of
their patches, ``view_pool`` times the images' own count (4: half of them), so the coreset's time and memory grow
by that factor, not eight. On the validation sets cut in any direction the views caught more defects at the same
false-reject rate than the images as taken; cut in one direction they came out about even (a pool of twice the
images' own patches). A pool of four times then caught more than twice on both cuts. ``views=as-taken`` keeps
to the images as they are, for a texture whose direction matters.
The coreset is picked where the model trains (``--device``); on a GPU a larger ``--max-bank`` is quick too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from export.data.batches import to_batch
from export.errors import DataError
from export.models.patchcore.network import PatchCore, PatchCoreConfig, nearest_in_bank, patch_features
from export.models.registry import TrainRun
from export.nn.coreset import greedy_coreset
from export.nn.smoothing import check_sigma
from export.nn.trunk import build_trunk

VIEWS = {"as-taken": 1, "dihedral": 8}  # each name's number of views of an image


@dataclass(frozen=True)
class PatchCoreTraining:
    """How the bank is built; the defaults are the CPU preset."""

    coreset: float = field(
        default=0.1, metadata={"help": "bank vectors as a fraction of the good images' own patch features"}
    )
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
    views: str = field(
        default="dihedral",
        metadata={
            "help": "dihedral: the bank also covers each good image turned by 90°, 180°, 270° and mirrored; "
            "as-taken: the images alone, for surfaces whose texture has a direction that a defect may turn"
        },
    )
    view_pool: float = field(
        default=4.0,
        metadata={
            "help": "with dihedral views: patches drawn at random from all views for the coreset to pick from, as "
            "many times the images' own count (1 to 8)"
        },
    )
    batch_size: int = field(
        default=16, metadata={"help": "images per trunk forward pass (with views, the patches are drawn per batch)"}
    )

    def check(self, config: PatchCoreConfig) -> None:
        """Refuse options that cannot work, with the fix."""
        config.level_pair()
        if config.image_size < 32 or config.image_size % 32:
            raise DataError(f"--image-size {config.image_size}: must be a multiple of 32, at least 32")
        check_sigma(config.sigma, config.image_size)
        if not 0.0 < self.coreset <= 1.0:
            raise DataError(f"--coreset {self.coreset}: a fraction in (0, 1], e.g. 0.1")
        if self.views not in VIEWS:
            raise DataError(f"--views {self.views}: one of {', '.join(VIEWS)}")
        if not 1.0 <= self.view_pool <= VIEWS["dihedral"]:
            raise DataError(f"--view-pool {self.view_pool}: from 1 (the images' own patch count) to 8 (all views)")
        if self.batch_size < 1 or self.coreset_projection < 1 or self.max_bank < 1 or config.reweight_neighbours < 2:
            raise DataError(
                "--batch-size, --coreset-projection and --max-bank must be at least 1, --reweight-neighbours 2"
            )


def image_views(batch: torch.Tensor, views: str) -> list[torch.Tensor]:
    """``B×C×H×W`` square images as taken, or (``dihedral``) turned by 0°, 90°, 180°, 270° and each mirrored."""
    if views == "as-taken":
        return [batch]
    turns = [torch.rot90(batch, k, dims=(2, 3)) for k in range(4)]
    return turns + [turn.flip(3) for turn in turns]


def train_patchcore(run: TrainRun) -> tuple[PatchCore, dict]:
    """Collect the patch features of all good images (and their views) and keep a greedy coreset as the bank."""
    config, options, images = run.config, run.training, run.images
    options.check(config)
    levels = config.level_pair()
    trunk = build_trunk(config.trunk, options.backbone_weights).to(run.device).eval()
    share = min(1.0, options.view_pool / VIEWS[options.views])  # of each view's patches, drawn at random
    chunks, own = [], 0
    with torch.no_grad():
        for start in tqdm(
            range(0, len(images), options.batch_size), desc="patchcore features", disable=not run.progress
        ):
            batch = to_batch(images[start : start + options.batch_size], run.device)
            for view in image_views(batch, options.views):
                features = patch_features(trunk, view, levels, config.pool_zero_padding)
                patches = features.permute(0, 2, 3, 1).flatten(0, 2).cpu()
                if share < 1.0:
                    kept = run.rng.choice(len(patches), round(share * len(patches)), replace=False)
                    patches = patches[torch.from_numpy(np.sort(kept))]
                chunks.append(patches)
            own += features.shape[0] * features.shape[2] * features.shape[3]
    patches = torch.cat(chunks)
    started = time.perf_counter()
    count = max(1, min(round(options.coreset * own), options.max_bank))
    picked = greedy_coreset(patches, count, run.rng, options.coreset_projection, run.device)
    coreset_seconds = time.perf_counter() - started
    bank = patches[picked]
    neighbours = nearest_in_bank(bank, config.reweight_neighbours) if config.reweight else None
    model = PatchCore(config, trunk.cpu(), bank, neighbours).to(run.device)
    summary = {
        **model.details(),
        "patch_features": own,
        "pooled_patches": len(patches),
        "train_images": len(images),
        "coreset_seconds": round(coreset_seconds, 1),
    }
    return model, summary
