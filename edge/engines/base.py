"""The engine interface (in the spirit of Polygraphy's runners): activate, infer, deactivate, timed."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.sidecar import Sidecar


class EngineError(Exception):
    """An artefact that cannot be loaded or run, or input it cannot take; the message says why."""


class InvalidOutput(EngineError):
    """An engine's outputs are not what its sidecar says (count, shape or dtype): a wrong batch profile, an artefact
    exported for another batch or size, a runtime that changed a type."""


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: shape (``-1`` for the batch dimension) and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Inference:
    """One batch's outputs: image scores ``B`` (float32) and anomaly maps ``B×1×h×w``, and the engine's time."""

    score: np.ndarray
    anomaly_map: np.ndarray
    infer_ms: float


class Engine(ABC):
    """An artefact ready to run. ``with engine:`` activates it (loads the library, allocates) and releases it.
    One thread at a time may call ``infer``: GPU runners reuse one input buffer per batch size."""

    backend = "abstract"

    def __init__(self, path: Path, sidecar: Sidecar) -> None:
        self.path = Path(path)
        self.sidecar = sidecar
        self.active = False

    @property
    def frame(self):
        return self.sidecar.frame

    @property
    def inputs(self) -> list[TensorSpec]:
        """What ``infer`` takes: uint8 frames, batch 1…max_batch."""
        return [TensorSpec("frames", (-1, *self.frame.frame_shape()), "uint8")]

    def __enter__(self) -> Engine:
        self.activate()
        return self

    def __exit__(self, *exc_info) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def check_frames(self, frames: np.ndarray | Sequence[np.ndarray]) -> None:
        """Refuse frames the artefact was not exported for, naming what it expects: a ``B×H×W(×3)`` array or a
        list of ``H×W(×3)`` frames."""
        expected = self.frame.frame_shape()
        listed = not isinstance(frames, np.ndarray)
        for i, frame in enumerate(frames if listed else [frames]):
            which = f"frame {i + 1} of {len(frames)}" if listed else "frames"
            if not isinstance(frame, np.ndarray):
                raise EngineError(f"{which} is a {type(frame).__name__}, not a numpy array of uint8 pixels")
            shape = tuple(frame.shape if listed else frame.shape[1:])
            if frame.dtype != np.uint8 or shape != expected:
                raise EngineError(
                    f"{which} of shape {shape} {frame.dtype}, but {self.path.name} takes "
                    f"{'x'.join(map(str, expected))} uint8 ({self.frame.pixel_format}): set the camera to that "
                    "size and pixel format, or export for the camera's"
                )
        if not 1 <= len(frames) <= self.frame.max_batch:
            raise EngineError(f"batch of {len(frames)}: {self.path.name} takes 1 to {self.frame.max_batch} frames")

    def infer(self, frames: np.ndarray | Sequence[np.ndarray]) -> Inference:
        """Run one batch of uint8 frames: a ``B×H×W(×3)`` array, or a list of ``H×W(×3)`` frames, which an engine
        with an input buffer of its own copies straight into it (the time counts)."""
        if not self.active:
            raise EngineError(f"{self.path.name}: activate the engine first (use it in a with block)")
        if not isinstance(frames, np.ndarray):
            frames = list(frames)
        self.check_frames(frames)
        started = time.perf_counter()
        batch = frames if isinstance(frames, np.ndarray) else self._gather(frames)
        score, anomaly_map = self._infer(np.ascontiguousarray(batch))
        self.check_outputs(len(batch), {"score": score, "anomaly_map": anomaly_map})
        elapsed = (time.perf_counter() - started) * 1e3
        return Inference(np.asarray(score, dtype=np.float32), anomaly_map, elapsed)

    def check_outputs(self, batch: int, outputs: dict[str, np.ndarray]) -> None:
        """Raise :class:`InvalidOutput` unless every output the sidecar describes has the shape (``-1``: the batch)
        and dtype it gives. Checked on every call, the first included (a few comparisons): a short batch from a
        wrong profile shows only at some batch sizes. (A checkpoint run directly, as ``edge-verify`` does, has a
        sidecar that describes no outputs.)"""
        for name, value in outputs.items():
            spec = self.sidecar.outputs.get(name)
            if spec is None:
                continue
            expected = tuple(batch if d == -1 else d for d in spec["shape"])
            shape, dtype = tuple(getattr(value, "shape", ())), str(getattr(value, "dtype", type(value).__name__))
            if shape != expected or dtype != spec["dtype"]:
                raise InvalidOutput(
                    f"{self.path.name} returned {name} {shape} {dtype} for a batch of {batch}, its sidecar says "
                    f"{expected} {spec['dtype']}: export or build the artefact again for this batch and size"
                )

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def _gather(self, frames: list[np.ndarray]) -> np.ndarray:
        """One ``B×…`` array of checked frames. A runner with a pinned input buffer overrides it to copy the frames
        straight there and returns that buffer, which its next call overwrites: only ``_infer`` may read it."""
        return np.stack(frames)
