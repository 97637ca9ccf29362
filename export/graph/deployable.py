"""The one deployable graph for every model: raw camera frames in, image score and anomaly map out.

``DeployableGraph`` wraps a registered model's own forward pass once, between the shared frame preprocessing
(:mod:`export.graph.frame`) and the shared score head (:mod:`export.graph.score_head`). What is model-specific
(memory lookups, folding, precision islands) happens in the model's ``prepare_for_export``, so the line runs one
graph without any Python per frame, and no model is written twice.
"""

from __future__ import annotations

import torch
from torch import nn

from edge.sidecar import FrameSpec
from export.graph.frame import FramePreprocess, MapToFrame
from export.models.base import AnomalyModel

MAP_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class DeployableGraph(nn.Module):
    """``forward(frames uint8) -> (score B float32, anomaly_map B×1×M×M)``: the score from the model's S×S map, the
    map averaged down to the frame's size where the model works above it (``M = S / k``,
    :func:`export.graph.frame.map_factor`); the map is FP16 in FP16 graphs."""

    def __init__(self, model: AnomalyModel, frame: FrameSpec, precision: str = "fp32") -> None:
        super().__init__()
        self.preprocess = FramePreprocess(frame, model.config.image_size, model.normalisation)
        self.model = model.prepare_for_export(precision)
        self.score = model.score_head
        self.to_frame = MapToFrame(frame, model.config.image_size)
        self.map_dtype = MAP_DTYPES.get(precision, torch.float32)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.model.anomaly_map(self.preprocess(frames))
        return self.score(anomaly_map), self.to_frame(anomaly_map).to(self.map_dtype)


class ReferenceGraph(nn.Module):
    """The same function the unfolded way, in FP32: frame preprocessing, the model as trained, the score head.
    ``edge-verify`` runs a checkpoint through it as the reference an artefact must agree with."""

    def __init__(self, model: AnomalyModel, frame: FrameSpec) -> None:
        super().__init__()
        self.preprocess = FramePreprocess(frame, model.config.image_size, model.normalisation)
        self.model = model
        self.score = model.score_head
        self.to_frame = MapToFrame(frame, model.config.image_size)

    def model_map(self, frames: torch.Tensor) -> torch.Tensor:
        """The model's ``B×1×S×S`` map of the frames, the one the score head pools."""
        return self.model.anomaly_map(self.preprocess(frames)).float()

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.model_map(frames)
        return self.score(anomaly_map), self.to_frame(anomaly_map)
