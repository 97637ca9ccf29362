"""The judge: a job's verdict message (:func:`edge.verdict.verdict_message`) at the current thresholds. Once a
required sink has broken, every frame not yet judged gets that refusal as its error instead."""

from __future__ import annotations

from edge.judge import Thresholds
from edge.sidecar import FrameSpec
from edge.verdict import Job, verdict_message


class Judge:
    """Thresholds (changed by control requests) and the refusal, applied to each job in turn."""

    def __init__(self, thresholds: Thresholds, frame: FrameSpec, camera: str, model: str) -> None:
        self.thresholds, self.frame, self.camera, self.model = thresholds, frame, camera, model
        self.refusal: tuple[str, str] | None = None  # (reason, detail) every frame gets from now on

    def message(self, job: Job) -> dict:
        """The verdict message for ``job`` (before the publisher adds ``seq``)."""
        if self.refusal is not None and job.error is None:
            job.error, job.detail = self.refusal
        return verdict_message(job, self.thresholds, self.frame, self.camera, self.model)
