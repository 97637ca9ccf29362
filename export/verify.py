"""``edge-verify``: run two artefacts over the same images and compare their maps, scores and verdicts.

Either side may be any artefact (``.onnx``, ``.plan``, ``.pt2``) or a training checkpoint (``.pt``), which runs
as the reference: the frame preprocessing and the unfolded FP32 model in PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edge.engines import Engine, EngineError, open_engine
from edge.engines.base import Inference
from edge.frames import frames_from_images
from edge.sidecar import FrameSpec, Sidecar
from edge.sources import IMAGE_SUFFIXES
from export.checkpoint import load_model, read_checkpoint
from export.data.images import read_image
from export.errors import DataError, UserError
from export.graph.deployable import ReferenceGraph

DEFAULT_THRESHOLD = 0.5  # without calibration, for probability scores: half the defect probability
TOLERANCES = {"fp32": {"map": 1e-4, "score": 1e-4}, "fp16": {"map": 0.1, "score": 1e-2}}


class CheckpointEngine(Engine):
    """A training checkpoint run the reference way: frame preprocessing, then the FP32 PyTorch model as trained,
    then the score head (:class:`export.graph.deployable.ReferenceGraph`)."""

    backend = "torch-checkpoint"

    def __init__(self, path: Path, frame: FrameSpec) -> None:
        payload = read_checkpoint(path)
        placeholder = Sidecar(payload["model"], "pt", "fp32", frame, {}, payload["config"]["image_size"])
        super().__init__(path, placeholder)

    def _activate(self) -> None:
        model, _ = load_model(self.path, "cpu")
        self._graph = ReferenceGraph(model, self.frame).eval()

    def _deactivate(self) -> None:
        self._graph = None

    @torch.no_grad()
    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, maps = self._graph(torch.from_numpy(frames))
        return score.numpy(), maps.numpy()


@dataclass(frozen=True)
class Comparison:
    """How far apart two artefacts are on the same frames."""

    images: int
    max_map_difference: float
    mean_map_difference: float
    max_score_difference: float
    non_finite: int
    threshold: float
    verdicts_differing: int
    map_tolerance: float
    score_tolerance: float

    @property
    def passed(self) -> bool:
        return (
            self.non_finite == 0
            and self.max_map_difference <= self.map_tolerance
            and self.max_score_difference <= self.score_tolerance
            and self.verdicts_differing == 0
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def verification_images(data: Path, limit: int | None = None) -> list[np.ndarray]:
    """RGB images from ``data/test/**`` if it exists, else from ``data/**``."""
    root = Path(data) / "test" if (Path(data) / "test").is_dir() else Path(data)
    if not root.is_dir():
        raise DataError(f"image folder not found: {data}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images under {root}")
    return [read_image(p) for p in paths[:limit]]


def open_any(path: Path, frame: FrameSpec | None) -> Engine:
    """An artefact's engine, or a checkpoint as reference engine for ``frame``."""
    if Path(path).suffix == ".pt":
        if frame is None:
            raise UserError("compare a checkpoint with an artefact: the artefact says which frames to make")
        return CheckpointEngine(path, frame)
    try:
        return open_engine(path)
    except EngineError as exc:
        raise UserError(str(exc)) from exc


def _run_all(engine: Engine, frames: np.ndarray) -> Inference:
    step = engine.frame.max_batch
    parts = [engine.infer(frames[i : i + step]) for i in range(0, len(frames), step)]
    return Inference(
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.anomaly_map.astype(np.float32) for p in parts]),
        sum(p.infer_ms for p in parts),
    )


def verify(
    candidate: Path,
    reference: Path,
    data: Path,
    threshold: float | None = None,
    map_tolerance: float | None = None,
    score_tolerance: float | None = None,
    limit: int | None = None,
) -> Comparison:
    """Run both on the images of ``data`` made into the candidate's frames, and compare."""
    engine = open_any(candidate, None)
    ref = open_any(reference, engine.frame)
    if ref.frame != engine.frame:
        raise UserError(f"{candidate} takes {engine.frame} but {reference} takes {ref.frame}: export both alike")
    calibration = engine.sidecar.calibration or {}
    threshold = threshold if threshold is not None else calibration.get("threshold")
    if threshold is None and engine.sidecar.score.bounded:
        threshold = DEFAULT_THRESHOLD
    tolerance = TOLERANCES.get(engine.sidecar.precision, TOLERANCES["fp32"])
    frames = frames_from_images(verification_images(data, limit), engine.frame)
    try:
        with engine, ref:
            a, b = _run_all(engine, frames), _run_all(ref, frames)
    except EngineError as exc:
        raise UserError(str(exc)) from exc
    if threshold is None:  # an uncalibrated distance: compare verdicts at the reference's median score
        threshold = float(np.median(b.score))
    finite = np.isfinite(a.score) & np.isfinite(a.anomaly_map).reshape(len(frames), -1).all(axis=1)
    difference = np.abs(a.anomaly_map - b.anomaly_map)
    return Comparison(
        images=len(frames),
        max_map_difference=float(np.nanmax(difference)) if finite.any() else float("inf"),
        mean_map_difference=float(np.nanmean(difference)) if finite.any() else float("inf"),
        max_score_difference=float(np.nanmax(np.abs(a.score - b.score))) if finite.any() else float("inf"),
        non_finite=int((~finite).sum()),
        threshold=float(threshold),
        verdicts_differing=int(((a.score >= threshold) != (b.score >= threshold)).sum()),
        map_tolerance=map_tolerance if map_tolerance is not None else tolerance["map"],
        score_tolerance=score_tolerance if score_tolerance is not None else tolerance["score"],
    )
