"""The line: capture → infer → judge → publish, as threads joined by bounded queues.

* The capture thread reads the source. A frame that cannot be judged (unreadable, wrong size or format, or the
  inference queue full while a live source keeps producing) gets its ``error`` verdict at once; the others queue
  for inference. Sources that are not live (files) wait for room instead.
* The inference thread batches up to the engine's max batch, waiting at most ``batch_timeout_ms`` for a batch to
  fill, and runs the engine. An engine that raises gives ``error(engine_error)`` verdicts, one whose outputs are
  not its sidecar's shapes and dtypes (:class:`~edge.engines.InvalidOutput`) or NaN/Inf ``error(invalid_output)``.
* The publishing thread (the caller's) judges, publishes in capture order (a reorder buffer: errors overtake
  nothing), feeds the sinks (JSON lines, rejected images, metrics, snapshot), and sends heartbeats.

Every captured frame gets exactly one verdict: the capture index counts frames, the publisher counts verdicts,
and the run ends only when both agree. A stage that fails turns the frames it holds into ``error`` verdicts and
never hangs the others: a frame that breaks the capture stage gets ``error(capture_failed)``; a source that
raises anything else than a lost camera, a required sink (JSON lines) that cannot write, or a stage stuck for
twice the stall limit ends the run with :attr:`Pipeline.failure` set (the frames still in flight get ``error``
verdicts where they cannot be judged: ``sink_error``, ``engine_error``), and ``edge-run`` exits non-zero after
publishing the final status. The verdict message and the counters are :mod:`edge.verdict`'s, the stall watchdog
:mod:`edge.watchdog`'s.
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
from edge.engines import Engine, InvalidOutput
from edge.heatmap import display_values
from edge.judge import Thresholds
from edge.publish import VerdictPublisher
from edge.sidecar import FrameSpec
from edge.sources import CameraLost, Source, SourceError
from edge.verdict import Counters, Job, verdict_message
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
    stall_s: float = 5.0  # watchdog: a live source silent, or a stage stuck, this long → degraded; stuck 2× → end


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
        self._published = ("ok", False)  # the health and whether a stage was stuck, as last published
        self.failure: str | None = None  # why the run ended early ("capture_failed: …"); None while all is well
        self._refusal: tuple[str, str] | None = None  # (reason, detail) every frame gets from now on
        self._broken_sinks: dict[int, str] = {}  # id(sink) → why, for best-effort sinks that failed
        self._intake = threading.Lock()  # capture counts frames under it; a stuck run's end closes it
        self._intake_open = True
        self._next_index = 0  # the next frame to publish: the head of the line
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
                job = Job(index, frame, t_queued=time.perf_counter())
                with self._intake:
                    if not self._intake_open:
                        break
                    self._in_flight[index] = job
                    index += 1
                    self.counters.count_frame(frame)
                self.watchdog.frame_arrived(job.t_queued)
                self._admit(job)
        except Exception as exc:  # anything else from the source: the run ends non-zero, never silently
            self._fail("capture_failed", f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._infer_queue.put(End(index))

    def _admit(self, job: Job) -> None:
        """Queue a counted frame for inference, or give it its error verdict now; a frame that breaks this gets
        ``error(capture_failed)``: once counted, a frame always reaches the publisher."""
        frame = job.frame
        try:
            if self._refusal is not None:
                job.error, job.detail = self._refusal
            elif frame.pixels is None:
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
                return
            else:
                job.error, job.detail = "overrun", "inference queue full: frames arrive faster than judged"
        except Exception as exc:
            job.error, job.detail = "capture_failed", f"{type(exc).__name__}: {str(exc)[:200]}"
            log.error("frame %s could not be handled: %s", getattr(frame, "frame_id", "?"), job.detail)
        self._done_queue.put(job)

    def _fail(self, reason: str, detail: str) -> None:
        """A stage cannot go on: stop the run (the first failure is the one reported)."""
        if self.failure is None:
            self.failure = f"{reason}: {detail}"
            log.error("stopping: %s", self.failure)
        self.stop.set()

    def _reconnect(self, exc: Exception) -> None:
        """Report the camera lost, reopen it with backoff (0.5 s doubling to 5 s) until it answers or stop."""
        log.warning("camera lost: %s; reconnecting", exc)
        self._camera_lost = True
        self._done_queue.put(StatusChange({"state": "running", "health": "camera_lost", "reason": str(exc)}))
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
        """Infer one batch; every job leaves with its outputs or an error, whatever the engine does."""
        started = time.perf_counter()
        self.watchdog.inference_started(started)
        error, detail = None, ""
        try:
            result = self.engine.infer([job.frame.pixels for job in batch])  # gathered into the engine's buffer
            outputs = [(float(result.score[i]), result.anomaly_map[i, 0]) for i in range(len(batch))]
        except Exception as exc:  # any engine failure is a verdict, not a crash
            error = "invalid_output" if isinstance(exc, InvalidOutput) else "engine_error"
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            self._engine_error_at = time.perf_counter()
        ended = time.perf_counter()
        self.watchdog.inference_ended()
        for i, job in enumerate(batch):
            job.t_infer_start, job.t_infer_end, job.batch = started, ended, len(batch)
            if error is None:
                job.score, job.anomaly_map = outputs[i]
            else:
                job.error, job.detail = error, detail
            self._done_queue.put(job)

    # -- judge and publish -----------------------------------------------------------------------------------
    def _emit(self, job: Job) -> None:
        self._in_flight.pop(job.index, None)
        if self._refusal is not None and job.error is None:
            job.error, job.detail = self._refusal
        message = self.publisher.verdict(
            verdict_message(job, self.thresholds, self.engine.frame, self.options.camera, self._model)
        )
        self.counters.count_verdict(message)
        self.watchdog.verdict_published(time.perf_counter())
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
        self._feed_sinks(message, job)

    def _feed_sinks(self, message: dict, job: Job) -> None:
        """Every sink gets the verdict; one that raises is left out from then on (health ``degraded``). A required
        one (the JSON-lines record) ends the run: the frames still in flight get ``error(sink_error)``."""
        for sink in self.sinks:
            if id(sink) in self._broken_sinks:
                continue
            try:
                sink.write(message, job)
            except Exception as exc:
                why = f"{sink.name} sink: {type(exc).__name__}: {str(exc)[:200]}"
                self._broken_sinks[id(sink)] = why
                if sink.required:
                    self._refusal = ("sink_error", f"{why}; the station is stopping")
                    self._fail("sink_error", why)
                else:
                    log.error("%s: left out for the rest of the run (verdicts are unaffected)", why)

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
        self._published = (self.health, self.stuck() is not None)
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

    def _oldest_waiting(self) -> float | None:
        """When the frame at the head of the line (the next to publish) was captured; None when none waits."""
        job = self._in_flight.get(self._next_index)
        return job.t_queued if job is not None else None

    def stuck(self) -> str | None:
        """Why a stage has stopped moving (the service watchdog is no longer fed), or None."""
        return self.watchdog.stuck(self._oldest_waiting())

    def degraded_reason(self) -> str | None:
        """Why the station is ``degraded``: it failed, a stage is stuck or a live source quiet, a sink broke."""
        if self.failure is not None:
            return self.failure
        stalled = self.watchdog.stalled(self._oldest_waiting())
        if stalled:
            return stalled
        return next(iter(self._broken_sinks.values()), None)

    @property
    def health(self) -> str:
        """ok, degraded (:meth:`degraded_reason`), camera_lost, paused (by an operator), or engine_error (in the
        last 10 s)."""
        if self._camera_lost:
            return "camera_lost"
        if self.paused is not None:
            return "paused"
        if time.perf_counter() - self._engine_error_at < 10.0:
            return "engine_error"
        return "degraded" if self.degraded_reason() else "ok"

    def heartbeat(self) -> None:
        self.publisher.poll_subscriptions()
        health = self.health
        if (health, self.stuck() is not None) != self._published:  # a stuck stage is news even while degraded
            self._published = (health, self.stuck() is not None)
            reason = self.degraded_reason() if health == "degraded" else None
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
        total = None
        next_beat = time.monotonic()
        deadline = self.options.verdict_deadline_ms
        wake = min(self.options.heartbeat_s, deadline / 4e3) if deadline else self.options.heartbeat_s
        stuck_since: float | None = None
        while total is None or self._next_index < total:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.options.heartbeat_s
                stuck = self.stuck()
                stuck_since = (stuck_since or time.monotonic()) if stuck else None
                if stuck and (self.stop.is_set() or time.monotonic() - stuck_since > self.options.stall_s):
                    self._abandon(stuck, pending)
                    break
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
            while self._next_index in pending or self._expire(self._next_index):
                if self._next_index in pending:
                    self._emit(pending.pop(self._next_index))
                self._next_index += 1
        self._running = False
        for thread in threads:
            thread.join(timeout=None if self._intake_open else 1.0)
        while not self._done_queue.empty():  # what came in at the very end
            item = self._done_queue.get()
            if isinstance(item, ControlRequest):
                item.answer = {"ok": False, "error": "the station is stopping"}
                item.done.set()
            elif isinstance(item, StatusChange):
                self.publisher.status(item.payload)
        self.heartbeat()
        return self.counters

    def _abandon(self, stuck: str, pending: dict[int, Job]) -> None:
        """A stage is stuck for good: no more frames are counted, and every frame captured and not yet published
        gets its verdict now, in order: its result where it has one, else ``error`` (``capture_failed`` while a read
        from the source hangs; ``engine_error`` otherwise: the frames sit between capture and publishing)."""
        reason = "capture_failed" if stuck.startswith("a read") else "engine_error"
        self._fail(reason, f"stuck: {stuck}")
        with self._intake:
            self._intake_open = False
            waiting = sorted(set(self._in_flight) | set(pending))
        for index in waiting:
            job = pending.pop(index, None)
            if job is None:
                held = self._in_flight[index]
                job = Job(index, held.frame, t_queued=held.t_queued, error=reason, detail=f"abandoned: {stuck}")
            self._emit(job)
        self._next_index = waiting[-1] + 1 if waiting else self._next_index

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
