"""What the station says about each frame: the verdict message (``verdict`` in
``edge/schemas/messages.schema.json``; the publisher adds ``seq``, ``t_publish_ns`` and the fields every message
carries) made from a :class:`Job`, and the :class:`Counters` its heartbeats carry (``counters``)."""

from __future__ import annotations

import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edge import __version__
from edge.judge import Thresholds, judge
from edge.publish import iso_time
from edge.sidecar import FrameSpec
from edge.sources import Frame

if TYPE_CHECKING:
    from edge.recipes import Recipe


@dataclass
class Job:
    """One frame on its way to a verdict, with its per-stage times (``perf_counter`` seconds)."""

    index: int
    frame: Frame
    t_queued: float = 0.0
    t_infer_start: float = 0.0
    t_infer_end: float = 0.0
    batch: int = 0
    score: float = float("nan")
    anomaly_map: np.ndarray | None = None
    error: str | None = None
    detail: str = ""
    record: bytes = b""  # the verdict as published, JSON (serialised once, for the JSON-lines record)
    recipe: Recipe | None = None  # what judges it: engine, thresholds, model (set at capture)
    outbox: queue.Queue | None = None  # its line's publishing queue, where inference hands it back


def verdict_message(
    job: Job, thresholds: Thresholds, frame_spec: FrameSpec, camera: str, model: str, recipe: str | None = None
) -> dict:
    """The verdict message for ``job``: judged from its engine outputs at ``thresholds``, or the error it already
    has, with the time each stage took, the ``model`` (``sha256:…``) and the ``recipe`` that judged it."""
    frame, now = job.frame, time.perf_counter()
    if job.error is None:
        verdict, reason, found = judge(job.score, job.anomaly_map, thresholds, frame_spec)
    else:
        verdict, reason, found = "error", job.error, []
    score = job.score if np.isfinite(job.score) else None
    detail = job.detail or ("engine output is NaN or infinite" if reason == "invalid_output" else "")
    latency = {
        "queue": (job.t_infer_start - job.t_queued) * 1e3 if job.t_infer_start else None,
        "infer": (job.t_infer_end - job.t_infer_start) * 1e3 if job.t_infer_start else None,
        "score": (time.perf_counter() - now) * 1e3,
        "total": (time.perf_counter() - frame.t_received) * 1e3 if frame.t_received else None,
    }
    return {
        "camera": camera,
        "frame_id": frame.frame_id,
        "camera_timestamp": frame.camera_timestamp or None,
        "t_capture_ns": frame.t_capture_ns,
        "t_receive_ns": frame.t_receive_ns,
        "time": iso_time(frame.t_capture_ns),
        "verdict": verdict,
        "reason": reason,
        "detail": detail or None,
        "score": round(score, 6) if score is not None else None,
        "threshold": thresholds.score,
        "pixel_threshold": thresholds.pixel,
        "regions": found,
        "batch": job.batch,
        "latency_ms": {k: round(v, 3) if v is not None else None for k, v in latency.items()},
        "model": model,
        "recipe": recipe,
        "edge_version": __version__,
    }


@dataclass
class Counters:
    """What a heartbeat reports: frames in, verdicts out, by kind and reason."""

    frames: int = 0
    verdicts: int = 0
    passed: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)
    last_frame_ns: int = 0
    last_verdict_ns: int = 0

    def count_frame(self, frame: Frame) -> None:
        """Count a captured frame."""
        self.frames += 1
        self.last_frame_ns = frame.t_receive_ns

    def count_verdict(self, message: dict) -> None:
        """Count a verdict message about to be published (counted first: whoever has received a verdict finds it
        in the counters)."""
        self.verdicts += 1
        self.last_verdict_ns = time.time_ns()
        if message["verdict"] == "pass":
            self.passed += 1
        elif message["verdict"] == "fail":
            self.failed += 1
        else:
            self.errors[message["reason"]] += 1

    def to_dict(self) -> dict:
        """The ``counters`` of a heartbeat, with the ages of the last frame and verdict."""
        now = time.time_ns()
        return {
            "frames": self.frames,
            "verdicts": self.verdicts,
            "pass": self.passed,
            "fail": self.failed,
            "error": sum(self.errors.values()),
            "errors": dict(self.errors),
            "last_frame_age_s": round((now - self.last_frame_ns) / 1e9, 3) if self.last_frame_ns else None,
            "last_verdict_age_s": round((now - self.last_verdict_ns) / 1e9, 3) if self.last_verdict_ns else None,
        }
