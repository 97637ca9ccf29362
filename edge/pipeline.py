"""The line: capture → infer → judge → publish, as threads joined by bounded queues.

* The capture thread reads the source. A frame that cannot be judged (unreadable, wrong size or format, or the
  inference queue full while a live source keeps producing) gets its ``error`` verdict at once; the others queue
  for inference. Sources that are not live (files) wait for room instead.
* The inference thread batches up to the engine's max batch, waiting at most ``batch_timeout_ms`` for a batch to
  fill, and runs the engine. An engine that raises or returns NaN/Inf gives ``error`` verdicts, not a crash.
* The publishing thread (the caller's) judges, publishes in capture order (a reorder buffer: errors overtake
  nothing), writes JSON lines and rejected images, and sends heartbeats.

Every captured frame gets exactly one verdict: the capture index counts frames, the publisher counts verdicts,
and the run ends only when both agree. The verdict message and the counters are :mod:`edge.verdict`'s, the
stall watchdog :mod:`edge.watchdog`'s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.drift import DriftMonitor
from edge.engines import Engine
from edge.heatmap import display_values
from edge.judge import Thresholds
from edge.publish import VerdictPublisher
from edge.sidecar import FrameSpec
from edge.sources import CameraLost, Source, SourceError
from edge.verdict import Counters, Job, verdict_message
from edge.watchdog import Watchdog

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


@dataclass(frozen=True)
class End:
    """No more frames: ``total`` were captured."""

    total: int


@dataclass(frozen=True)
class StatusChange:
    """A change of health to publish on the status topic (from a thread that does not own the socket)."""

    payload: dict


@dataclass
class ControlRequest:
    """A validated control request (:mod:`edge.control`), carried out by the publishing thread."""

    request: dict
    who: str
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict | None = None


@dataclass
class PipelineOptions:
    station: str = "station"
    camera: str = ""
    max_batch: int = 1
    batch_timeout_ms: float = 2.0
    queue_size: int = 8
    heartbeat_s: float = 1.0
    max_frames: int | None = None
    verdict_deadline_ms: float | None = None  # a frame without a result by then gets error(deadline)
    heatmaps: bool = False  # publish a PNG of the anomaly map of every rejected frame on heatmap/<station>
    stall_s: float = 5.0  # watchdog: a live source silent, or one inference running, this long → degraded


class Pipeline:
    """Runs a source through an engine to a publisher until the source ends or ``stop`` is set."""

    def __init__(
        self,
        source: Source,
        engine: Engine,
        publisher: VerdictPublisher,
        thresholds: Thresholds,
        options: PipelineOptions,
        sinks: list | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.source, self.engine, self.publisher = source, engine, publisher
        self.thresholds, self.options = thresholds, options
        self.sinks = sinks if sinks is not None else []  # each has .write(verdict: dict, job: Job)
        self.drift = drift
        self.counters = Counters()
        self.latencies: deque[float] = deque(maxlen=10000)  # the last 10,000 frames: bounded for months of running
        self.stop = threading.Event()
        self.late_results = 0
        self._camera_lost = False
        self._engine_error_at = -1e9
        self.watchdog = Watchdog(options.stall_s, source.live)
        self._in_flight: dict[int, Job] = {}  # captured, not yet published
        self._expired: set[int] = set()  # published as error(deadline); their results come late
        self._published_health = "ok"
        self.paused: str | None = None  # the reason, while an operator has paused the station
        self._running = False
        self.on_heartbeat = None  # called with the health after each heartbeat (the service watchdog)
        self._infer_queue: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self._done_queue: queue.Queue = queue.Queue()
        self._model = f"sha256:{engine.sidecar.sha256}"
        self._expected = engine.frame.frame_shape()
        self._format_reported = False  # the first frame of the wrong size or format is explained in the log

    # -- capture ---------------------------------------------------------------------------------------------
    def _capture(self) -> None:
        index = 0
        try:
            while not self.stop.is_set() and index != self.options.max_frames:
                try:
                    frame = self.source.read(timeout=0.2)
                except TimeoutError:
                    continue
                except CameraLost as exc:
                    self._reconnect(exc)
                    continue
                if frame is None:
                    break
                job = Job(index, frame, t_queued=time.perf_counter())
                self._in_flight[index] = job
                self.watchdog.frame_arrived(job.t_queued)
                index += 1
                self.counters.count_frame(frame)
                if frame.pixels is None:
                    job.error, job.detail = frame.error or "capture_failed", frame.detail
                elif (paused := self.paused) is not None:
                    job.error, job.detail = "paused", f"the station is paused: {paused}"
                elif frame.pixels.shape != self._expected or frame.pixels.dtype != np.uint8:
                    job.error = "frame_format"
                    job.detail = f"frame {frame.pixels.shape} {frame.pixels.dtype}, engine takes {self._expected} uint8"
                    if not self._format_reported:
                        self._format_reported = True
                        log.error("%s", wrong_frame_message(frame.pixels, self.engine.frame))
                elif self._enqueue(job):
                    continue
                else:
                    job.error, job.detail = "overrun", "inference queue full: frames arrive faster than judged"
                self._done_queue.put(job)
        except Exception as exc:  # a source failing mid-run ends the run with a status, never silently
            log.error("capture stopped: %s", exc)
            self._camera_lost = True
        finally:
            self._infer_queue.put(End(index))

    def _reconnect(self, exc: Exception) -> None:
        """Report the camera lost, reopen it with backoff (0.5 s doubling to 5 s) until it answers or stop."""
        log.warning("camera lost: %s; reconnecting", exc)
        self._camera_lost = True
        self._done_queue.put(StatusChange({"state": "running", "health": "camera_lost", "reason": str(exc)}))
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.source.reconnect()
            except (SourceError, CameraLost) as retry:
                log.debug("still absent: %s", retry)
                self.stop.wait(delay)
                delay = min(2 * delay, 5.0)
                continue
            log.info("camera back")
            self._camera_lost = False
            self._done_queue.put(StatusChange({"state": "running", "health": "ok", "reason": "camera reconnected"}))
            return

    def _enqueue(self, job: Job) -> bool:
        """Queue for inference; a live source never waits (False: overrun), files wait for room."""
        if self.source.live:
            try:
                self._infer_queue.put_nowait(job)
                return True
            except queue.Full:
                return False
        while not self.stop.is_set():
            try:
                self._infer_queue.put(job, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- inference -------------------------------------------------------------------------------------------
    def _infer(self) -> None:
        end = None
        while end is None:
            first = self._infer_queue.get()
            if isinstance(first, End):
                end = first
                break
            batch = [first]
            deadline = time.perf_counter() + self.options.batch_timeout_ms / 1e3
            while len(batch) < self.options.max_batch:
                try:
                    item = self._infer_queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if isinstance(item, End):
                    end = item
                    break
                batch.append(item)
            self._run_batch(batch)
        self._done_queue.put(end)

    def _run_batch(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        self.watchdog.inference_started(started)
        try:
            result = self.engine.infer([job.frame.pixels for job in batch])  # gathered into the engine's buffer
            scores, maps, error, detail = result.score, result.anomaly_map, None, ""
        except Exception as exc:  # any engine failure is a verdict, not a crash
            scores, maps, error, detail = None, None, "engine_error", f"{type(exc).__name__}: {str(exc)[:200]}"
            self._engine_error_at = time.perf_counter()
        ended = time.perf_counter()
        self.watchdog.inference_ended()
        for i, job in enumerate(batch):
            job.t_infer_start, job.t_infer_end, job.batch = started, ended, len(batch)
            if error is None:
                job.score, job.anomaly_map = float(scores[i]), maps[i, 0]
            else:
                job.error, job.detail = error, detail
            self._done_queue.put(job)

    # -- judge and publish -----------------------------------------------------------------------------------
    def _emit(self, job: Job) -> None:
        self._in_flight.pop(job.index, None)
        message = self.publisher.verdict(
            verdict_message(job, self.thresholds, self.engine.frame, self.options.camera, self._model)
        )
        self.counters.count_verdict(message)
        if message["verdict"] == "pass" and self.drift is not None:
            change = self.drift.add(message["score"])
            if change:
                log.warning("good-score drift %s: %s", "detected" if change["drift"] else "gone", change)
                self.publisher.status({"state": "running", "health": self.health, **change})
        if message["latency_ms"]["total"] is not None:
            self.latencies.append(message["latency_ms"]["total"])
        if self.options.heatmaps and message["verdict"] == "fail":
            grey = np.rint(display_values(job.anomaly_map, message["pixel_threshold"]) * 255).astype(np.uint8)
            ok, png = cv2.imencode(".png", grey)
            if ok:
                self.publisher.heatmap(message["seq"], png.tobytes())
        for sink in self.sinks:
            sink.write(message, job)

    # -- control (edge.control) ---------------------------------------------------------------------------
    def control(self, request: dict, who: str, timeout: float = 2.0) -> dict:
        """Carry out a validated control request (from any thread); returns the answer for the operator."""
        if request["command"] == "status":
            return {"ok": True, "status": self.status()}
        item = ControlRequest(request, who)
        if not self._running:
            return {"ok": False, "error": "the station is not running"}
        self._done_queue.put(item)
        if not item.done.wait(timeout):
            return {"ok": False, "error": f"the station did not carry it out within {timeout:.0f} s (stopping?)"}
        return item.answer

    def _carry_out(self, item: ControlRequest) -> dict:
        """On the publishing thread: change thresholds or pause state, and announce it on the status topic."""
        request, command = item.request, item.request["command"]
        if command == "set_threshold":
            for key in ("score", "pixel"):
                problem = key in request and self.engine.sidecar.score.check_threshold(key, request[key])
                if problem:
                    return {"ok": False, "error": problem}
            old = self.thresholds
            self.thresholds = Thresholds(request.get("score", old.score), request.get("pixel", old.pixel), "control")
            change = {
                "thresholds": {"score": self.thresholds.score, "pixel": self.thresholds.pixel},
                "previous": {"score": old.score, "pixel": old.pixel},
            }
        elif command == "pause":
            self.paused = request.get("reason") or "paused by an operator"
            change = {"paused": True, "reason": self.paused}
        else:
            self.paused = None
            change = {"paused": False}
        self._published_health = self.health
        self.publisher.status(
            {"state": "running", "health": self.health, "control": {"command": command, "by": item.who, **change}}
        )
        return {"ok": True, **change}

    def status(self) -> dict:
        """What the station is doing, for the snapshot and control sockets."""
        return {
            "station": self.options.station,
            "run_id": self.publisher.run_id,
            "health": self.health,
            "paused": self.paused,
            "thresholds": {
                "score": self.thresholds.score,
                "pixel": self.thresholds.pixel,
                "origin": self.thresholds.origin,
            },
            "last_seq": self.publisher.seq - 1,
            "counters": self.counters.to_dict(),
        }

    @property
    def health(self) -> str:
        """ok, degraded (capture or inference stalled), camera_lost, paused (by an operator), or engine_error
        (in the last 10 s)."""
        if self._camera_lost:
            return "camera_lost"
        if self.paused is not None:
            return "paused"
        if time.perf_counter() - self._engine_error_at < 10.0:
            return "engine_error"
        return "degraded" if self.watchdog.stalled() else "ok"

    def heartbeat(self) -> None:
        self.publisher.poll_subscriptions()
        health = self.health
        if health != self._published_health:
            self._published_health = health
            reason = self.watchdog.stalled() if health == "degraded" else None
            log.warning("health %s%s", health, f": {reason}" if reason else "")
            self.publisher.status({"state": "running", "health": health, **({"reason": reason} if reason else {})})
        self.publisher.heartbeat(
            {"health": health, "counters": self.counters.to_dict(), "interval_s": self.options.heartbeat_s}
        )
        if self.on_heartbeat is not None:
            self.on_heartbeat(health)

    def _expire(self, index: int) -> bool:
        """Publish error(deadline) for the frame at ``index`` if its deadline has passed without a result."""
        deadline, job = self.options.verdict_deadline_ms, self._in_flight.get(index)
        if deadline is None or job is None or (time.perf_counter() - job.t_queued) * 1e3 < deadline:
            return False
        self._expired.add(index)
        self._emit(
            Job(index, job.frame, t_queued=job.t_queued, error="deadline", detail=f"no result in {deadline:.0f} ms")
        )
        return True

    def run(self) -> Counters:
        """Capture, infer and publish until the source ends (or ``stop``); returns the counters."""
        threads = [
            threading.Thread(target=self._capture, name="capture", daemon=True),
            threading.Thread(target=self._infer, name="infer", daemon=True),
        ]
        self.publisher.status({"state": "running", "health": self.health, "camera": self.options.camera})
        self._running = True
        for thread in threads:
            thread.start()
        pending: dict[int, Job] = {}
        next_index, total = 0, None
        next_beat = time.monotonic()
        deadline = self.options.verdict_deadline_ms
        wake = min(self.options.heartbeat_s, deadline / 4e3) if deadline else self.options.heartbeat_s
        while total is None or next_index < total:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.options.heartbeat_s
            try:
                item = self._done_queue.get(timeout=max(0.0, min(wake, next_beat - time.monotonic())))
            except queue.Empty:
                item = None
            if isinstance(item, StatusChange):
                self.publisher.status(item.payload)
            elif isinstance(item, ControlRequest):
                item.answer = self._carry_out(item)
                item.done.set()
            elif isinstance(item, End):
                total = item.total
            elif item is not None and item.index in self._expired:
                self._expired.discard(item.index)
                self.late_results += 1
                log.warning("result for frame %d came after its deadline: discarded", item.frame.frame_id)
            elif item is not None:
                pending[item.index] = item
            while next_index in pending or self._expire(next_index):
                if next_index in pending:
                    self._emit(pending.pop(next_index))
                next_index += 1
        self._running = False
        for thread in threads:
            thread.join()
        while not self._done_queue.empty():  # what came in at the very end
            item = self._done_queue.get()
            if isinstance(item, ControlRequest):
                item.answer = {"ok": False, "error": "the station is stopping"}
                item.done.set()
            elif isinstance(item, StatusChange):
                self.publisher.status(item.payload)
        self.heartbeat()
        return self.counters

    def queue_depth(self) -> int:
        """Frames waiting for inference now (for metrics)."""
        return self._infer_queue.qsize()

    def latency_summary(self) -> dict:
        """p50/p99/max of receive → verdict published over the last 10,000 frames, in ms."""
        if not self.latencies:
            return {}
        values = np.asarray(self.latencies)
        return {
            "p50": round(float(np.percentile(values, 50)), 2),
            "p99": round(float(np.percentile(values, 99)), 2),
            "max": round(float(values.max()), 2),
        }
