"""The model registry: a name → how to build, train and reload that model.

Each model package (``export/models/<name>/``) registers one :class:`ModelSpec` when imported. ``edge-train
--model NAME`` looks it up; every other tool reads the name from the checkpoint and reloads through the same spec.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.errors import DataError, UserError
from export.models.base import SCORE_KINDS, AnomalyModel


@dataclass
class TrainedPart:
    """A model trained before, offered for reuse as a part of another (an ensemble's member): what its checkpoint
    holds, read by the caller. ``used`` turns true once a training took it."""

    source: str  # where it was read from, for the summary
    model: str
    config: dict
    options: dict  # its training options and seed, as its checkpoint records them
    state_dict: dict
    summary: dict
    used: bool = False


@dataclass
class TrainRun:
    """What a model's training function gets: its config and training options, the good images at model size
    (RGB uint8), the device, a generator seeded with ``seed`` (torch's generator is seeded with it too), and
    whether to show progress; ``reuse``: parts trained before that :meth:`part` may take instead of training."""

    config: object
    training: object
    images: list[np.ndarray]
    device: torch.device
    rng: np.random.Generator
    progress: bool = True
    seed: int = 0
    reuse: tuple[TrainedPart, ...] = ()

    def part(self, name: str, config: object, training: object) -> tuple[AnomalyModel, dict]:
        """A registered model this one is made of, as ``edge-train --model NAME`` with the same options and seed
        would train it: read from a part in ``reuse`` with the same model, config, training options and seed, or
        else trained here from the run's seed."""
        spec = get_spec(name)
        wanted = {**recorded_options(training), "seed": self.seed}
        for part in self.reuse:
            if part.model == name and part.config == config.to_dict() and options_match(part.options, wanted):
                part.used = True
                model = spec.load(config, part.state_dict).to(self.device)
                return model, {**part.summary, "reused": part.source}
        torch.manual_seed(self.seed)
        own = dataclasses.replace(self, config=config, training=training, rng=np.random.default_rng(self.seed))
        return spec.train(own)


def recorded_options(training: object) -> dict:
    """A training dataclass's options as a checkpoint records them (paths as text)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(training).items()}


def options_match(recorded: dict, wanted: dict) -> bool:
    """Whether a checkpoint's recorded training options hold every ``wanted`` value (an option added since the
    checkpoint was trained is not held)."""
    return all(k in recorded and recorded[k] == v for k, v in wanted.items())


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    ``config`` is the dataclass of what defines the network (stored in the checkpoint); ``training`` the dataclass
    of how it trains, whose defaults are the model's CPU preset. Both become ``edge-train`` flags. ``train`` runs
    the training and returns the model and a summary; ``load`` rebuilds the model from a checkpoint's config and
    state dict; ``quick`` holds option values for a run of seconds at 64 px (the registry's end-to-end test).
    """

    name: str
    summary: str
    model: type[AnomalyModel]
    config: type
    training: type
    train: Callable[[TrainRun], tuple[AnomalyModel, dict]]
    load: Callable[[object, dict], AnomalyModel]
    quick: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model.score_kind not in SCORE_KINDS:
            raise ValueError(f"{self.name}: score_kind {self.model.score_kind!r} is not one of {SCORE_KINDS}")

    def options(self, values: dict) -> tuple[object, object]:
        """The config and training dataclasses from ``values`` (field name → value; missing → default); a value
        naming no field of either is refused."""
        fields = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
        unknown = sorted(set(values) - fields(self.config) - fields(self.training))
        if unknown:
            raise DataError(
                f"model {self.name} has no option {', '.join(unknown)}: see edge-train --model {self.name} --help"
            )
        pick = lambda cls: cls(**{k: v for k, v in values.items() if k in fields(cls)})  # noqa: E731
        return pick(self.config), pick(self.training)


def option_types(cls: type) -> dict[str, type]:
    """Each field of a config or training dataclass → the type its value takes (``Path | None`` → ``Path``)."""
    return {
        name: next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        for name, hint in typing.get_type_hints(cls).items()
    }


def _typed(cls: type, name: str, text: str, flag: str) -> object:
    """``text`` as the type of field ``name`` of ``cls`` (``None`` if ``cls`` has no such field)."""
    kind = option_types(cls).get(name)
    if kind is None:
        return None
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise DataError(f"{flag}: {name}={text}: write true or false")
        return text.lower() == "true"
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise DataError(f"{flag}: {name}={text} is not a {kind.__name__}") from None


def parse_model(item: str, flag: str) -> tuple[str, dict]:
    """``"rb-ae:map=difference"`` → ``("rb-ae", {"map": "difference"})``: a registered name and typed values of
    options it has (a clear error naming ``flag`` otherwise)."""
    name, *options = item.strip().split(":")
    if not name:
        raise DataError(f"{flag}: an empty model name; write names separated by commas")
    spec = get_spec(name)
    values: dict = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise DataError(f"{flag}: {name}:{option}: write option=value, e.g. rb-ae:map=difference")
        typed = _typed(spec.config, key, value, flag)
        values[key] = typed if typed is not None else _typed(spec.training, key, value, flag)
    spec.options(values)  # refuses an option the model does not have
    return name, values


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model (a second registration under the same name replaces the first)."""
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; a clear error naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}: registered models are {', '.join(model_names())}") from None
