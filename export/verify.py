"""``edge-verify``: run two artefacts over the same images and compare their maps, scores and verdicts.

Either side may be any artefact (``.onnx``, ``.plan``, ``.pt2``) or a training checkpoint (``.pt``), which runs
as the reference: the frame preprocessing and the unfolded FP32 model in PyTorch. The candidate may run on another
backend than its suffix's (OpenVINO for an ``.onnx``, with BF16 arithmetic where the CPU has it).

Reduced precision (FP16, BF16, INT8) is judged by what the line does with it: verdicts differing at the calibrated
threshold (at most 1 in 1,000 images; on fewer than 1,000 images none), and, on an MVTec-style test set with
ground truth, the change of image and pixel AUROC (at most 0.005). The largest map and score differences are
reported; for FP32 and FP16 they are held to tolerances as well.
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
from export.data.images import load_test_set, read_image, resize_mask
from export.errors import DataError, UserError
from export.graph.deployable import ReferenceGraph
from export.metrics import auroc, pixel_auroc

DEFAULT_THRESHOLD = 0.5  # without calibration, for probability scores: half the defect probability
# Largest map and score differences from FP32 still called the same numbers; BF16 and INT8 are judged by verdicts
# and AUROC only (INT8 moves a defect's map by design: its activations are clipped to the calibrated ranges).
TOLERANCES = {"fp32": {"map": 1e-4, "score": 1e-4}, "fp16": {"map": 0.1, "score": 1e-2}}
AUROC_TOLERANCE = 0.005
VERDICTS_ALLOWED_PER_IMAGE = 1 / 1000


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
    """How far apart two artefacts are on the same frames, and whether that is within the gate."""

    images: int
    precision: str  # the candidate's arithmetic: fp32, fp16, bf16 or int8
    backend: str
    max_map_difference: float
    mean_map_difference: float
    max_score_difference: float
    non_finite: int
    threshold: float
    verdicts_differing: int
    verdicts_allowed: int
    image_auroc: list[float] | None  # [candidate, reference], on a test set with good and defective images
    pixel_auroc: list[float] | None  # [candidate, reference], with ground-truth masks
    auroc_change: float | None
    map_tolerance: float | None
    score_tolerance: float | None

    @property
    def passed(self) -> bool:
        return (
            self.non_finite == 0
            and (self.map_tolerance is None or self.max_map_difference <= self.map_tolerance)
            and (self.score_tolerance is None or self.max_score_difference <= self.score_tolerance)
            and self.verdicts_differing <= self.verdicts_allowed
            and (self.auroc_change is None or self.auroc_change <= AUROC_TOLERANCE)
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        """One line with the numbers the gate looks at."""
        aurocs = ", ".join(
            f"{name} AUROC {pair[1]:.4f} → {pair[0]:.4f}"
            for name, pair in (("image", self.image_auroc), ("pixel", self.pixel_auroc))
            if pair is not None
        )
        return (
            f"{self.precision} on {self.backend}, {self.images} images: {self.verdicts_differing} verdicts differ at "
            f"threshold {self.threshold:.4g} (allowed {self.verdicts_allowed}), max |Δscore| "
            f"{self.max_score_difference:.2g}, max |Δmap| {self.max_map_difference:.2g}"
            + (f", {aurocs} (change allowed {AUROC_TOLERANCE})" if aurocs else ", AUROC not measured")
            + (f", {self.non_finite} non-finite outputs" if self.non_finite else "")
        )


@dataclass(frozen=True)
class VerificationSet:
    """Frames to compare on, with labels (True: defective) and ground-truth masks at the map's size when the folder
    is an MVTec-style test set."""

    frames: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None


def verification_set(data: Path, frame: FrameSpec, map_size: int, limit: int | None = None) -> VerificationSet:
    """``data/test/**`` (with ``data/ground_truth``: labelled, with masks) or every image under ``data``, as
    ``frame``'s frames; ``limit`` keeps that many, spread evenly over the sorted list."""
    data = Path(data)
    if (data / "test").is_dir() and (data / "ground_truth").is_dir():
        samples = _spread(load_test_set(data), limit)
        frames = frames_from_images([s.image for s in samples], frame)
        labels = np.array([s.is_defective for s in samples])
        return VerificationSet(frames, labels, np.stack([resize_mask(s.mask, map_size) for s in samples]))
    root = data / "test" if (data / "test").is_dir() else data
    if not root.is_dir():
        raise DataError(f"image folder not found: {data}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images under {root}")
    return VerificationSet(frames_from_images([read_image(p) for p in _spread(paths, limit)], frame), None, None)


def _spread(items: list, limit: int | None) -> list:
    if limit is None or limit >= len(items):
        return items
    return [items[round(i * len(items) / limit)] for i in range(limit)]


def open_any(
    path: Path, frame: FrameSpec | None, backend: str = "auto", inference_precision: str | None = None
) -> Engine:
    """An artefact's engine (on ``backend``), or a checkpoint as reference engine for ``frame``."""
    if Path(path).suffix == ".pt":
        if frame is None:
            raise UserError("compare a checkpoint with an artefact: the artefact says which frames to make")
        return CheckpointEngine(path, frame)
    try:
        return open_engine(path, backend=backend, inference_precision=inference_precision)
    except EngineError as exc:
        raise UserError(str(exc)) from exc


def run_all(engine: Engine, frames: np.ndarray) -> Inference:
    """The engine's outputs for every frame, in batches of its maximum (maps as float32)."""
    step = engine.frame.max_batch
    try:
        with engine:
            parts = [engine.infer(frames[i : i + step]) for i in range(0, len(frames), step)]
    except EngineError as exc:
        raise UserError(str(exc)) from exc
    return Inference(
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.anomaly_map.astype(np.float32) for p in parts]),
        sum(p.infer_ms for p in parts),
    )


def map_size(sidecar: Sidecar) -> int:
    """The side of the artefact's anomaly map (its model size unless the sidecar says otherwise)."""
    return int(sidecar.outputs.get("anomaly_map", {}).get("shape", [sidecar.model_size])[-1])


def arithmetic(engine: Engine) -> str:
    """The precision an engine computes in: the artefact's, or BF16 where OpenVINO is asked for it."""
    return "bf16" if getattr(engine, "inference_precision", None) == "bf16" else engine.sidecar.precision


def _aurocs(labels, masks, a: Inference, b: Inference) -> tuple[list | None, list | None]:
    if labels is None or labels.all() or not labels.any():
        return None, None
    image = [auroc(labels, a.score), auroc(labels, b.score)]
    pixel = [pixel_auroc(masks, a.anomaly_map[:, 0]), pixel_auroc(masks, b.anomaly_map[:, 0])]
    return image, pixel if masks is not None and masks.any() else None


def compare(
    a: Inference,
    b: Inference,
    images: VerificationSet,
    threshold: float,
    precision: str,
    backend: str,
    map_tolerance: float | None = None,
    score_tolerance: float | None = None,
) -> Comparison:
    """Candidate outputs ``a`` against reference outputs ``b`` on ``images``."""
    n = len(images.frames)
    finite = np.isfinite(a.score) & np.isfinite(a.anomaly_map).reshape(n, -1).all(axis=1)
    difference = np.abs(a.anomaly_map - b.anomaly_map)
    tolerance = TOLERANCES.get(precision, {"map": None, "score": None})
    image, pixel = _aurocs(images.labels, images.masks, a, b) if finite.all() else (None, None)
    changes = [abs(pair[0] - pair[1]) for pair in (image, pixel) if pair is not None]
    return Comparison(
        images=n,
        precision=precision,
        backend=backend,
        max_map_difference=float(np.nanmax(difference)) if finite.any() else float("inf"),
        mean_map_difference=float(np.nanmean(difference)) if finite.any() else float("inf"),
        max_score_difference=float(np.nanmax(np.abs(a.score - b.score))) if finite.any() else float("inf"),
        non_finite=int((~finite).sum()),
        threshold=float(threshold),
        verdicts_differing=int(((a.score >= threshold) != (b.score >= threshold)).sum()),
        verdicts_allowed=int(n * VERDICTS_ALLOWED_PER_IMAGE),
        image_auroc=image,
        pixel_auroc=pixel,
        auroc_change=max(changes) if changes else None,
        map_tolerance=map_tolerance if map_tolerance is not None else tolerance["map"],
        score_tolerance=score_tolerance if score_tolerance is not None else tolerance["score"],
    )


def verify(
    candidate: Path,
    reference: Path,
    data: Path,
    threshold: float | None = None,
    map_tolerance: float | None = None,
    score_tolerance: float | None = None,
    limit: int | None = None,
    backend: str = "auto",
    inference_precision: str | None = None,
) -> Comparison:
    """Run both on the images of ``data`` made into the candidate's frames, and compare. The threshold is the
    given one, else the candidate's calibration, else the reference's, else 0.5 for probabilities (for distances,
    the reference's median score)."""
    engine = open_any(candidate, None, backend, inference_precision)
    ref = open_any(reference, engine.frame)
    if ref.frame != engine.frame:
        raise UserError(f"{candidate} takes {engine.frame} but {reference} takes {ref.frame}: export both alike")
    for calibration in (engine.sidecar.calibration, ref.sidecar.calibration):
        if threshold is None and calibration:
            threshold = calibration["threshold"]
    if threshold is None and engine.sidecar.score.bounded:
        threshold = DEFAULT_THRESHOLD
    images = verification_set(data, engine.frame, map_size(engine.sidecar), limit)
    a, b = run_all(engine, images.frames), run_all(ref, images.frames)
    if threshold is None:  # an uncalibrated distance: compare verdicts at the reference's median score
        threshold = float(np.median(b.score))
    return compare(a, b, images, threshold, arithmetic(engine), engine.backend, map_tolerance, score_tolerance)
