"""``edge-train`` for any registered model: read the good images, seed, run the model's training, save.

The model's own package decides what training means (gradient steps in stages, or collecting a memory bank);
this module only does what every model shares: the data, the seed, the device, the timing and the checkpoint.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import read_checkpoint, save_checkpoint
from export.data.images import load_good_images
from export.devices import resolve_device
from export.models import TrainRun, get_spec
from export.models.registry import TrainedPart, recorded_options

log = logging.getLogger(__name__)


def _trained_part(path: Path) -> TrainedPart:
    payload = read_checkpoint(path)
    training = payload["training"]
    return TrainedPart(
        str(path), payload["model"], payload["config"], training.get("options", {}), payload["state_dict"], training
    )


def train(
    model: str,
    data: Path,
    out: Path,
    values: dict | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    reuse: Sequence[Path] = (),
) -> dict:
    """Train ``model`` on ``data/train/good`` with option ``values``, write the checkpoint to ``out`` and return
    the training summary. ``reuse``: checkpoints of models trained before that a model made of others (an
    ensemble) takes as its parts where model, options and seed are the same; the summary lists those taken
    (``reused``) and the seconds they had been trained in (``reused_seconds``)."""
    spec = get_spec(model)
    config, training = spec.options(values or {})
    resolved = resolve_device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images = load_good_images(data, config.image_size)
    started = time.perf_counter()
    parts = tuple(_trained_part(path) for path in reuse)
    network, details = spec.train(TrainRun(config, training, images, resolved, rng, progress, seed, parts))
    taken = [part for part in parts if part.used]
    summary = {
        "model": model,
        "options": {
            "data": str(data),
            "out": str(out),
            "device": device,
            "seed": seed,
            **recorded_options(training),
        },
        **details,
        "seconds": round(time.perf_counter() - started, 1),
        "reused": [part.source for part in taken],
        "reused_seconds": round(sum(part.summary.get("seconds") or 0.0 for part in taken), 1),
        "device": str(resolved),
        "torch": str(torch.__version__),
        "host": platform.node(),
    }
    save_checkpoint(out, model, network, summary)
    log.info("wrote %s (%s, %.0f s)", out, model, summary["seconds"])
    return summary
