"""The judge: a job's verdict message (:func:`edge.verdict.verdict_message`) by the recipe it was captured under
(its thresholds as they are now, its frame spec, its model). Once a required sink has broken, every frame not yet
judged gets that refusal as its error instead."""

from __future__ import annotations

from edge.verdict import Job, verdict_message


class Judge:
    """The refusal, and the camera's name, applied to each job in turn."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.refusal: tuple[str, str] | None = None  # (reason, detail) every frame gets from now on

    def message(self, job: Job) -> dict:
        """The verdict message for ``job`` (before the publisher adds ``seq``)."""
        if self.refusal is not None and job.error is None:
            job.error, job.detail = self.refusal
        recipe = job.recipe
        return verdict_message(job, recipe.thresholds, recipe.engine.frame, self.camera, recipe.model, recipe.name)
