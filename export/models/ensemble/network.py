"""An ensemble of registered models: each member's anomaly map divided by its spread on good training images,
averaged. Members whose mistakes differ (TrustMAE's pixel × perceptual reconstruction error, RB-AE's encoder
feature differences, CMA-AE's patch reconstruction) cover each other's false alarms on irregular textures, where
a good image's rare structure lights up one map but not the others.

Data flow for a normalised ``B×3×S×S`` batch: every member's ``anomaly_map`` (each in its own precision, as the
member exports it) → ``map_i × spread_0 / spread_i`` in FP32 → the mean over members → the shared score head, the
mean of the highest 3.7 % of the map (picked on validation sets, like TrustMAE's). ``spread_i`` is the standard
deviation of member i's map over the good training images' pixels, measured once after training and kept in the
checkpoint, so the members' maps count alike whatever their units; the map reads in the first member's units
(their size is what the FP16 gate's absolute tolerances were set for). It is a non-negative distance when the
members' maps are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from export.errors import DataError
from export.graph.score_head import ScoreHead
from export.models.base import AnomalyModel
from export.models.registry import get_spec, parse_model

SCORE_AREA = 600 / 128**2  # the image score's share of the map, picked on validation sets at 128 px
DEFAULT_MEMBERS = "trustmae,rb-ae:map=difference,cma-ae:stage1_iterations=200:stage2_iterations=200"


@dataclass(frozen=True)
class EnsembleConfig:
    """What defines an ensemble: its members (``name`` or ``name:option=value:…``, comma-separated, each trained
    with its own preset and these options) and, once trained, each member's model name and full config
    (``member_configs``: ``{"model": name, "config": {…}}`` each, what reloading needs)."""

    image_size: int = 128
    members: str = field(
        default=DEFAULT_MEMBERS,
        metadata={"help": "registered models, comma-separated, options after colons: trustmae,rb-ae:map=difference"},
    )
    score: str = "top_k_mean"
    top_k: int | None = field(
        default=None,
        metadata={"help": "pixels the image score averages, the highest (none: 3.7 %% of the map, 600 at 128 px)"},
    )
    member_configs: tuple = field(default=(), metadata={"flag": False})

    def to_dict(self) -> dict:
        return asdict(self)

    def score_pixels(self) -> int:
        """How many of the highest pixels the image score averages: ``top_k``, or 3.7 % of the map."""
        return self.top_k if self.top_k is not None else round(SCORE_AREA * self.image_size**2)


def parse_members(text: str) -> list[tuple[str, dict]]:
    """``"trustmae,rb-ae:map=difference"`` → ``[("trustmae", {}), ("rb-ae", {"map": "difference"})]``, every
    name registered and every option one its model has (a clear error otherwise)."""
    members = [parse_model(item, "--members") for item in text.split(",")]
    if any(name == "ensemble" for name, _ in members):
        raise DataError("--members: an ensemble cannot hold an ensemble")
    if len(members) < 2:
        raise DataError(f"--members {text!r}: an ensemble needs at least two members")
    if len({get_spec(name).model.normalisation for name, _ in members}) > 1:
        raise DataError(
            f"--members {text!r}: the members normalise images differently, so one graph cannot feed them one "
            "preprocessed frame; pick members that share it (trustmae, rb-ae and cma-ae do)"
        )
    return members


class Ensemble(AnomalyModel):
    """``anomaly_map`` = the mean over members of ``member.anomaly_map × spread_0 / spread``."""

    score_kind = "distance"

    def __init__(self, config: EnsembleConfig, members: list[AnomalyModel], spreads: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.names = [c["model"] for c in config.member_configs]
        self.members = nn.ModuleList(members)
        self.normalisation = members[0].normalisation
        self.export_precisions = tuple(
            p for p in members[0].export_precisions if all(p in m.export_precisions for m in members)
        )
        self.register_buffer("spreads", spreads if spreads is not None else torch.ones(len(members)))

    def member_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's ``B×1×S×S`` map, FP32, as the member computes it."""
        return [member.anomaly_map(x).float() for member in self.members]

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.member_maps(x)
        weights = self.spreads[0].float() / self.spreads.float()
        return sum(m * w for m, w in zip(maps, weights, strict=True)) / len(maps)

    @torch.no_grad()
    def measure_spreads(self, batches: list[torch.Tensor]) -> None:
        """Set each member's spread: the standard deviation of its map over every pixel of ``batches`` (good
        images); refuse a member whose map is flat."""
        per_member = [[] for _ in self.members]
        for batch in batches:
            for collected, member_map in zip(per_member, self.member_maps(batch), strict=True):
                collected.append(member_map.double().flatten())
        spreads = [torch.cat(c).std().item() for c in per_member]
        for spread, name in zip(spreads, self.names, strict=True):
            if not np.isfinite(spread) or spread <= 1e-12:
                raise DataError(f"member {name} gives the same map for every good image: train it longer")
        self.spreads.copy_(torch.tensor(spreads))

    @property
    def score_head(self) -> ScoreHead:
        """The mean of the map's highest 3.7 % (or ``top_k`` pixels), or with ``score = "max"`` its maximum."""
        return ScoreHead(self.config.score, self.config.score_pixels())

    def example_images(self) -> np.ndarray | None:
        """The good images the first member that carries any carries."""
        return next((images for m in self.members if (images := m.example_images()) is not None), None)

    def prepare_for_export(self, precision: str) -> Ensemble:
        """Each member prepared as it exports itself; the division and the mean stay FP32."""
        if precision not in self.export_precisions:
            raise DataError(f"this ensemble exports in {', '.join(self.export_precisions)} only, not {precision}")
        members = [m.prepare_for_export(precision) for m in self.members]
        return Ensemble(self.config, members, self.spreads.clone()).eval()

    def export_info(self) -> dict:
        return {"members": [m.export_info() for m in self.members]}

    def details(self) -> dict:
        return {
            "members": [{"model": n, **m.details()} for n, m in zip(self.names, self.members, strict=True)],
            "spreads": [round(float(s), 6) for s in self.spreads],
        }
