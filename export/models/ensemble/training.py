"""Training an ensemble: every member with its own training function and preset (the options ``--members``
gives it), one after the other, each from the run's seed as if it were trained alone (so a member is the same
network ``edge-train --model NAME --seed N`` gives, and such a checkpoint given to ``edge-train --reuse`` is taken
instead of training the member again), then each member's spread measured on good training images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from export.data.batches import to_batch
from export.errors import DataError
from export.models.ensemble.network import Ensemble, parse_members
from export.models.registry import TrainRun, get_spec


@dataclass(frozen=True)
class EnsembleTraining:
    """How the ensemble trains besides its members' own presets."""

    spread_images: int = field(default=64, metadata={"help": "good training images the members' spreads come from"})
    batch_size: int = field(default=16, metadata={"help": "images per batch when measuring the spreads"})


def train_ensemble(run: TrainRun) -> tuple[Ensemble, dict]:
    """Train each member, measure its spread; returns the ensemble and each member's training summary."""
    config, options = run.config, run.training
    if options.spread_images < 1 or options.batch_size < 1:
        raise DataError("--spread-images and --batch-size must be at least 1")
    members, member_configs, summaries = [], [], []
    for name, values in parse_members(config.members):
        member_config, member_training = get_spec(name).options({**values, "image_size": config.image_size})
        member, summary = run.part(name, member_config, member_training)
        members.append(member.eval())
        member_configs.append({"model": name, "config": member_config.to_dict()})
        summaries.append({"model": name, **{k: v for k, v in summary.items() if k != "loss_curve"}})
    config = dataclasses.replace(config, member_configs=tuple(member_configs))
    model = Ensemble(config, members).to(run.device).eval()
    images = run.images[: options.spread_images]
    model.measure_spreads(
        [
            to_batch(images[i : i + options.batch_size], run.device, model.normalisation)
            for i in range(0, len(images), options.batch_size)
        ]
    )
    return model, {"members": summaries, "spreads": [float(s) for s in model.spreads]}
