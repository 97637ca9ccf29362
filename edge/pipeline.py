"""The line: capture → infer → judge → publish, as threads joined by bounded queues.

* The capture thread reads the source. A frame that cannot be judged (unreadable, wrong size or format, or the
  inference queue full while a live source keeps producing) gets its ``error`` verdict at once; the others queue
  for inference. Sources that are not live (files) wait for room instead.
* The inference thread batches up to the engine's max batch, waiting at most ``batch_timeout_ms`` for a batch to
  fill, and runs the engine. An engine that raises or returns NaN/Inf gives ``error`` verdicts, not a crash.
* The publishing thread (the caller's) judges, publishes in capture order (a reorder buffer: errors overtake
  nothing), writes JSON lines and rejected images, and sends heartbeats.

Every captured frame gets exactly one verdict: the capture index counts frames, the publisher counts verdicts,
and the run ends only when both agree.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edge.drift import DriftMonitor
from edge.engines import Engine
from edge.publish import VerdictPublisher, iso_time
from edge.scoring import Thresholds, judge
from edge.sources import CameraLost, Frame, Source, SourceError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class End:
    """No more frames: ``total`` were captured."""

    total: int


@dataclass(frozen=True)
class StatusChange:
    """A change of health to publish on the status topic (from a thread that does not own the socket)."""

    payload: dict


@dataclass
class PipelineOptions:
    station: str = "station"
    camera: str = ""
    max_batch: int = 1
    batch_timeout_ms: float = 2.0
    queue_size: int = 8
    heartbeat_s: float = 1.0
    max_frames: int | None = None


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

    def to_dict(self) -> dict:
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
        self.sinks = sinks or []  # each has .write(verdict: dict, job: Job)
        self.drift = drift
        self.counters = Counters()
        self.latencies: list[float] = []
        self.health = "ok"
        self.stop = threading.Event()
        self._infer_queue: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self._done_queue: queue.Queue = queue.Queue()
        self._model = f"sha256:{engine.sidecar.sha256}"
        self._expected = engine.frame.frame_shape()

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
                index += 1
                self.counters.frames += 1
                self.counters.last_frame_ns = frame.t_receive_ns
                if frame.pixels is None:
                    job.error, job.detail = frame.error or "capture_failed", frame.detail
                elif frame.pixels.shape != self._expected or frame.pixels.dtype != np.uint8:
                    job.error = "frame_format"
                    job.detail = f"frame {frame.pixels.shape} {frame.pixels.dtype}, engine takes {self._expected} uint8"
                elif self._enqueue(job):
                    continue
                else:
                    job.error, job.detail = "overrun", "inference queue full: frames arrive faster than judged"
                self._done_queue.put(job)
        except Exception as exc:  # a source failing mid-run ends the run with a status, never silently
            log.error("capture stopped: %s", exc)
            self.health = "camera_lost"
        finally:
            self._infer_queue.put(End(index))

    def _reconnect(self, exc: Exception) -> None:
        """Report the camera lost, reopen it with backoff (0.5 s doubling to 5 s) until it answers or stop."""
        log.warning("camera lost: %s; reconnecting", exc)
        self.health = "camera_lost"
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
            self.health = "ok"
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
        try:
            result = self.engine.infer(np.stack([job.frame.pixels for job in batch]))
            scores, maps, error, detail = result.score, result.anomaly_map, None, ""
        except Exception as exc:  # any engine failure is a verdict, not a crash
            scores, maps, error, detail = None, None, "engine_error", f"{type(exc).__name__}: {str(exc)[:200]}"
            self.health = "engine_error"
        ended = time.perf_counter()
        for i, job in enumerate(batch):
            job.t_infer_start, job.t_infer_end, job.batch = started, ended, len(batch)
            if error is None:
                job.score, job.anomaly_map = float(scores[i]), maps[i, 0]
            else:
                job.error, job.detail = error, detail
            self._done_queue.put(job)

    # -- judge and publish -----------------------------------------------------------------------------------
    def _verdict(self, job: Job) -> dict:
        frame, now = job.frame, time.perf_counter()
        if job.error is None:
            verdict, reason, found = judge(job.score, job.anomaly_map, self.thresholds, self.engine.frame)
        else:
            verdict, reason, found = "error", job.error, []
        score = job.score if np.isfinite(job.score) else None
        if reason == "invalid_output":
            job.detail = "engine output is NaN or infinite"
        latency = {
            "queue": (job.t_infer_start - job.t_queued) * 1e3 if job.t_infer_start else None,
            "infer": (job.t_infer_end - job.t_infer_start) * 1e3 if job.t_infer_start else None,
            "score": (time.perf_counter() - now) * 1e3,
            "total": (time.perf_counter() - frame.t_received) * 1e3 if frame.t_received else None,
        }
        return {
            "camera": self.options.camera,
            "frame_id": frame.frame_id,
            "camera_timestamp": frame.camera_timestamp,
            "t_capture_ns": frame.t_capture_ns,
            "t_receive_ns": frame.t_receive_ns,
            "time": iso_time(frame.t_capture_ns),
            "verdict": verdict,
            "reason": reason,
            "detail": job.detail or None,
            "score": round(score, 6) if score is not None else None,
            "threshold": self.thresholds.score,
            "pixel_threshold": self.thresholds.pixel,
            "regions": found,
            "batch": job.batch,
            "latency_ms": {k: round(v, 3) if v is not None else None for k, v in latency.items()},
            "model": self._model,
        }

    def _emit(self, job: Job) -> None:
        message = self.publisher.verdict(self._verdict(job))
        counters = self.counters
        counters.verdicts += 1
        counters.last_verdict_ns = message["t_publish_ns"]
        if message["verdict"] == "pass":
            counters.passed += 1
            change = self.drift.add(message["score"]) if self.drift else None
            if change:
                log.warning("good-score drift %s: %s", "detected" if change["drift"] else "gone", change)
                self.publisher.status({"state": "running", "health": self.health, **change})
        elif message["verdict"] == "fail":
            counters.failed += 1
        else:
            counters.errors[message["reason"]] += 1
        if message["latency_ms"]["total"] is not None:
            self.latencies.append(message["latency_ms"]["total"])
        for sink in self.sinks:
            sink.write(message, job)

    def heartbeat(self) -> None:
        self.publisher.poll_subscriptions()
        self.publisher.heartbeat({"health": self.health, "counters": self.counters.to_dict()})

    def run(self) -> Counters:
        """Capture, infer and publish until the source ends (or ``stop``); returns the counters."""
        threads = [
            threading.Thread(target=self._capture, name="capture", daemon=True),
            threading.Thread(target=self._infer, name="infer", daemon=True),
        ]
        self.publisher.status({"state": "running", "health": self.health, "camera": self.options.camera})
        for thread in threads:
            thread.start()
        pending: dict[int, Job] = {}
        next_index, total = 0, None
        next_beat = time.monotonic()
        while total is None or next_index < total:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.options.heartbeat_s
            try:
                item = self._done_queue.get(timeout=max(0.0, next_beat - time.monotonic()))
            except queue.Empty:
                continue
            if isinstance(item, StatusChange):
                self.publisher.status(item.payload)
                continue
            if isinstance(item, End):
                total = item.total
            else:
                pending[item.index] = item
            while next_index in pending:
                self._emit(pending.pop(next_index))
                next_index += 1
        for thread in threads:
            thread.join()
        self.heartbeat()
        return self.counters

    def latency_summary(self) -> dict:
        """p50/p99/max of receive → verdict published, in ms."""
        if not self.latencies:
            return {}
        values = np.asarray(self.latencies)
        return {
            "p50": round(float(np.percentile(values, 50)), 2),
            "p99": round(float(np.percentile(values, 99)), 2),
            "max": round(float(values.max()), 2),
        }
