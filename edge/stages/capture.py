"""The capture stage: reads the source, counts every frame in the ledger under the recipe in force, and sends it
on to inference or, when it cannot be judged (unreadable, wrong size or format, paused, the inference queue full
while a live source keeps producing), straight to publishing with its error. A lost camera is reopened with
backoff; anything else the source raises ends the run (``capture_failed``), never silently.

A recipe switch (:meth:`Capture.arm`) takes effect between two frames: at the next read, or at the first frame
whose id reaches ``at_frame`` (the PLC's part boundary; the camera's settings then change as soon as the frame
before it has arrived, so the boundary frame is exposed with the new ones)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.recipes import Recipe
from edge.sidecar import FrameSpec
from edge.sources import CameraLost, Frame, Source, SourceError
from edge.stages.inference import End
from edge.stages.ledger import Ledger
from edge.verdict import Job
from edge.watchdog import READ_TIMEOUT_S, Watchdog

log = logging.getLogger(__name__)


def wrong_frame_message(pixels: np.ndarray, frame: FrameSpec) -> str:
    """What came, what the engine takes, and how to make them meet."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return (
        f"frames are {width}x{height} with {channels} channel(s) ({pixels.dtype}), the engine takes "
        f"{frame.width}x{frame.height} {frame.pixel_format} (uint8): every such frame gets error(frame_format). "
        f"Re-export the model for this camera (edge-export --frame-size {width}x{height}, with --roi x,y,w,h to "
        f"inspect part of the frame), or give edge-run frames of {frame.width}x{frame.height}"
    )


class Capture:
    """Thread target :meth:`run`: source → ledger → ``to_inference`` (or ``to_publishing`` with an error), then
    :class:`End` with the number of frames counted.

    ``refusal()`` is the error every frame gets from now on (a required sink broke), ``paused()`` the operator's
    reason while the station is paused; ``report(status)`` announces camera lost and back; ``fail(reason,
    detail)`` stops the run for good; ``switched(current, other, frame_id, problem)`` is told of each recipe
    switch (``problem`` empty: ``other`` is in force from ``frame_id`` on) and each refused one (``current``
    stays)."""

    def __init__(
        self,
        source: Source,
        recipe: Recipe,
        ledger: Ledger,
        watchdog: Watchdog,
        to_inference: queue.Queue,
        to_publishing: queue.Queue,
        stop: threading.Event,
        *,
        refusal: Callable[[], tuple[str, str] | None],
        paused: Callable[[], str | None],
        report: Callable[[dict], None],
        fail: Callable[[str, str], None],
        switched: Callable[[Recipe, Recipe, int | None, str], None],
        max_frames: int | None = None,
    ) -> None:
        self.source, self.recipe, self.ledger, self.watchdog = source, recipe, ledger, watchdog
        self.frame: FrameSpec = recipe.engine.frame
        self.switched = switched
        self._armed: tuple[Recipe, int | None] | None = None  # the next recipe and the frame id it starts at
        self._camera_set = False  # the armed recipe's camera settings are applied
        self._switch_lock = threading.Lock()
        self.to_inference, self.to_publishing, self.stop = to_inference, to_publishing, stop
        self.refusal, self.paused, self.report, self.fail = refusal, paused, report, fail
        self.max_frames = max_frames
        self.camera_lost = False
        self._expected = self.frame.frame_shape()
        self._format_reported = False  # the first frame of the wrong size or format is explained in the log

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.ledger.captured != self.max_frames:
                self._switch_if_due(None)
                self.watchdog.read_started(time.perf_counter())
                try:
                    frame = self.source.read(timeout=READ_TIMEOUT_S)
                except TimeoutError:
                    continue
                except CameraLost as exc:
                    self._reconnect(exc)
                    continue
                finally:
                    self.watchdog.read_ended()
                if frame is None:
                    break
                self._switch_if_due(frame)
                job = self.ledger.enter(frame, self.recipe, self.to_publishing)
                if job is None:
                    break
                self.watchdog.frame_arrived(job.t_queued)
                self._admit(job)
        except Exception as exc:  # anything else from the source: the run ends non-zero, never silently
            self.fail("capture_failed", f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self.to_inference.put(End(self.ledger.captured, self.to_publishing))

    def arm(self, recipe: Recipe, at_frame: int | None = None) -> Recipe | None:
        """Switch to ``recipe`` from the next frame read, or from the first whose id reaches ``at_frame``; returns
        a recipe armed before and not yet in force, now replaced (the caller releases it)."""
        with self._switch_lock:
            replaced, self._camera_set = self._armed, False
            self._armed = (recipe, at_frame)
        return replaced[0] if replaced else None

    @property
    def armed(self) -> bool:
        """A switch waits for its frame."""
        return self._armed is not None

    def disarm(self) -> Recipe | None:
        """Drop the armed switch; returns its recipe (the caller releases it), or None."""
        with self._switch_lock:
            armed, self._armed = self._armed, None
        return armed[0] if armed else None

    def _switch_if_due(self, frame: Frame | None) -> None:
        """Before a read (``frame`` None) or with the frame just read: change the camera's settings, then put the
        armed recipe in force, when due."""
        if self._armed is None:  # nothing armed (the common case): no lock taken
            return
        with self._switch_lock:
            if self._armed is None:
                return
            recipe, at_frame = self._armed
            frame_id = None if frame is None else frame.frame_id
            if not self._camera_set and (at_frame is None or (frame_id is not None and frame_id >= at_frame - 1)):
                try:
                    if recipe.camera:
                        self.source.adjust(recipe.camera)
                except (SourceError, CameraLost) as exc:
                    self._armed = None
                    self.switched(self.recipe, recipe, frame_id, f"the camera refused its settings: {exc}")
                    return
                self._camera_set = True
            if frame is None or (at_frame is not None and frame.frame_id < at_frame):
                return
            self._armed = None
            old, self.recipe = self.recipe, recipe
        self.switched(old, recipe, frame.frame_id, "")

    def _admit(self, job: Job) -> None:
        """Queue a counted frame for inference, or send it on with its error now; a frame that breaks this gets
        ``error(capture_failed)``: once counted, a frame always reaches publishing."""
        frame = job.frame
        try:
            if (refused := self.refusal()) is not None:
                job.error, job.detail = refused
            elif frame.pixels is None:
                job.error, job.detail = frame.error or "capture_failed", frame.detail
            elif (paused := self.paused()) is not None:
                job.error, job.detail = "paused", f"the station is paused: {paused}"
            elif frame.pixels.shape != self._expected or frame.pixels.dtype != np.uint8:
                job.error = "frame_format"
                job.detail = f"frame {frame.pixels.shape} {frame.pixels.dtype}, engine takes {self._expected} uint8"
                if not self._format_reported:
                    self._format_reported = True
                    log.error("%s", wrong_frame_message(frame.pixels, self.frame))
            elif self._enqueue(job):
                return
            else:
                job.error, job.detail = "overrun", "inference queue full: frames arrive faster than judged"
        except Exception as exc:
            job.error, job.detail = "capture_failed", f"{type(exc).__name__}: {str(exc)[:200]}"
            log.error("frame %s could not be handled: %s", getattr(frame, "frame_id", "?"), job.detail)
        self.to_publishing.put(job)

    def _enqueue(self, job: Job) -> bool:
        """Queue for inference; a live source never waits (False: overrun), files wait for room."""
        if self.source.live:
            try:
                self.to_inference.put_nowait(job)
                return True
            except queue.Full:
                return False
        while not self.stop.is_set():
            try:
                self.to_inference.put(job, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _reconnect(self, exc: Exception) -> None:
        """Report the camera lost, reopen it with backoff (0.5 s doubling to 5 s) until it answers or stop."""
        log.warning("camera lost: %s; reconnecting", exc)
        self.camera_lost = True
        self.report({"state": "running", "health": "camera_lost", "reason": str(exc)})
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.source.reconnect()  # anything but these two ends the run (capture_failed)
            except (SourceError, CameraLost) as retry:
                log.debug("still absent: %s", retry)
                self.stop.wait(delay)
                delay = min(2 * delay, 5.0)
                continue
            log.info("camera back")
            self.camera_lost = False
            self.report({"state": "running", "health": "ok", "reason": "camera reconnected"})
            return
