"""The metadata sidecar next to every artefact (``memseg.onnx`` → ``memseg.onnx.json``).

The sidecar is the contract between the offline side and the line: what the engine expects (frame size, pixel
format, ROI, batch), what it returns, which model and memory it holds, the sha256 of the artefact and of what it
was made from, how it was trained, and its calibration. The line trusts nothing else: an artefact is used only
with a sidecar whose sha256 matches its bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = 1
SUFFIX = ".json"
PIXEL_FORMATS = ("mono8", "rgb8", "bgr8")


class SidecarError(Exception):
    """A sidecar that is missing, unreadable or does not belong to its artefact."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FrameSpec:
    """The camera frame an artefact takes: size, pixel format, region of interest and batch."""

    width: int
    height: int
    pixel_format: str = "rgb8"
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h inside the frame; None: whole frame
    max_batch: int = 1

    def __post_init__(self) -> None:
        if self.pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel format {self.pixel_format!r}: use one of {', '.join(PIXEL_FORMATS)}")
        if self.width < 1 or self.height < 1 or self.max_batch < 1:
            raise ValueError(f"frame {self.width}x{self.height}, batch {self.max_batch}: all must be positive")
        if self.roi is not None:
            x, y, w, h = self.roi
            if x < 0 or y < 0 or w < 1 or h < 1 or x + w > self.width or y + h > self.height:
                raise ValueError(
                    f"ROI x={x},y={y},w={w},h={h} does not lie inside the {self.width}x{self.height} frame"
                )

    @property
    def channels(self) -> int:
        return 1 if self.pixel_format == "mono8" else 3

    @property
    def region(self) -> tuple[int, int, int, int]:
        """The ROI, or the whole frame."""
        return self.roi if self.roi is not None else (0, 0, self.width, self.height)

    def frame_shape(self) -> tuple[int, ...]:
        """One frame's array shape as the camera delivers it: ``H×W`` (mono8) or ``H×W×3``."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    @classmethod
    def from_dict(cls, data: dict) -> FrameSpec:
        roi = data.get("roi")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            pixel_format=str(data["pixel_format"]),
            roi=tuple(int(v) for v in roi) if roi is not None else None,
            max_batch=int(data["max_batch"]),
        )


SCORE_KINDS = ("probability", "distance")
Z_EPS = 1e-7


@dataclass(frozen=True)
class ScoreSpec:
    """What the score and the map are: ``probability`` (in [0, 1]) or ``distance`` (non-negative, unbounded), and
    the score head that made the image score from the map. Maps are displayed with the pixel threshold in the
    middle of the colour scale (:mod:`edge.heatmap`), whatever their kind."""

    kind: str = "probability"
    head: str = "top_k_mean"

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"score kind {self.kind!r}: use one of {', '.join(SCORE_KINDS)}")

    @property
    def bounded(self) -> bool:
        return self.kind == "probability"

    def to_z(self, scores: np.ndarray | float) -> np.ndarray:
        """Scores on an unbounded scale where calibration fits the good scores' tail and the drift watch compares
        means: the logit of a probability, the logarithm of a distance."""
        values = np.asarray(scores, np.float64)
        if self.bounded:
            clipped = np.clip(values, Z_EPS, 1 - Z_EPS)
            return np.log(clipped / (1 - clipped))
        return np.log(np.maximum(values, Z_EPS))

    def z_of(self, score: float) -> float:
        """:meth:`to_z` of one score, in plain floats (once per passed part: no arrays)."""
        if self.bounded:
            clipped = min(max(score, Z_EPS), 1 - Z_EPS)
            return math.log(clipped / (1 - clipped))
        return math.log(max(score, Z_EPS))

    def from_z(self, z: float) -> float:
        """The score at ``z`` (inverse of :meth:`to_z`)."""
        return float(1.0 / (1.0 + math.exp(-z))) if self.bounded else float(math.exp(z))

    def check_threshold(self, name: str, value: float) -> str | None:
        """Why ``value`` cannot be a threshold for these scores, or None."""
        if not math.isfinite(value):
            return f"{name} {value}: give a finite number"
        if self.bounded and not 0.0 <= value <= 1.0:
            return f"{name} {value}: this model's scores are probabilities, give a value in [0, 1]"
        if value < 0.0:
            return f"{name} {value}: this model's scores are distances (never negative), give a value ≥ 0"
        return None


@dataclass
class Sidecar:
    """Everything the line needs to know about one artefact."""

    model: str
    artefact_format: str  # onnx, plan, pt2
    precision: str  # fp32, fp16, int8 (a QDQ graph: export/quantize.py)
    frame: FrameSpec
    outputs: dict[str, dict]  # name → {"shape": [...], "dtype": "..."}
    model_size: int
    score: ScoreSpec = field(default_factory=ScoreSpec)
    model_details: dict = field(default_factory=dict)  # memory size, trunk, … (for people; the line ignores it)
    sha256: str = ""
    source: dict = field(default_factory=dict)  # {"path", "sha256"} of the checkpoint or ONNX it came from
    training: dict = field(default_factory=dict)
    calibration: dict | None = None
    calibration_history: list[dict] = field(default_factory=list)
    build: dict = field(default_factory=dict)  # TensorRT version, GPU, compute capability, …
    created: str = ""
    software_version: str = ""
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frame"] = asdict(self.frame)
        data["score"] = asdict(self.score)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Sidecar:
        try:
            values = dict(data)
            values["frame"] = FrameSpec.from_dict(values["frame"])
            values["score"] = ScoreSpec(**values.get("score", {}))  # sidecars before the field: probabilities
            if "memory_samples" in values:  # sidecars before model_details
                values.setdefault("model_details", {})["memory_samples"] = values.pop("memory_samples")
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise SidecarError(f"sidecar fields are not valid: {exc}") from exc


def sidecar_path(artefact: Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + SUFFIX)


def write_sidecar(artefact: Path, sidecar: Sidecar) -> Path:
    """Hash the artefact into the sidecar and write it atomically next to the artefact."""
    sidecar.sha256 = sha256_file(artefact)
    path = sidecar_path(artefact)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_sidecar(artefact: Path, verify: bool = True) -> Sidecar:
    """The artefact's sidecar; with ``verify`` the artefact's sha256 must match it."""
    artefact = Path(artefact)
    path = sidecar_path(artefact)
    if not artefact.is_file():
        raise SidecarError(f"artefact not found: {artefact}")
    if not path.is_file():
        raise SidecarError(
            f"{artefact} has no sidecar {path.name} beside it: the sidecar travels with its artefact (copy "
            f"{path.name} into the same folder), or export or build it again"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SidecarError(f"cannot read sidecar {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SidecarError(f"{path} is not a sidecar of schema {SCHEMA}")
    sidecar = Sidecar.from_dict(data)
    if verify:
        actual = sha256_file(artefact)
        if actual != sidecar.sha256:
            raise SidecarError(
                f"{artefact} does not match its sidecar (sha256 {actual[:12]}… ≠ {sidecar.sha256[:12]}…): the "
                "artefact was replaced or damaged; export or build it again, or restore the matching pair"
            )
    return sidecar
