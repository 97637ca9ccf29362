"""The line: capture → inference → sequencer → judge → publishing (:mod:`edge.stages`), as threads joined by
bounded queues, one way.

* Capture (its own thread) counts every frame in the ledger and queues it for inference, or gives it its error at
  once (unreadable, wrong size or format, paused, the inference queue full while a live source keeps producing).
  Sources that are not live (files) wait for room instead.
* Inference (its own thread) batches and runs the engine; every frame leaves with outputs or an error.
* The publishing thread (the caller's) puts results back in capture order (deadlines), judges, publishes, feeds
  the sinks, carries out control requests, and sends heartbeats. It alone touches the ZeroMQ socket: other threads
  hand it status changes and control requests as tasks.

Every captured frame gets exactly one verdict: the ledger counts frames in, publishing counts verdicts out, and the
run ends only when both agree. A stage that fails turns the frames it holds into ``error`` verdicts and never
hangs the others: a frame that breaks the capture stage gets ``error(capture_failed)``; a source that raises
anything else than a lost camera, a required sink (JSON lines) that cannot write, or a stage stuck for twice the
stall limit ends the run with :attr:`Pipeline.failure` set (the frames still in flight get ``error`` verdicts
where they cannot be judged: ``sink_error``, ``engine_error``), and ``edge-run`` exits non-zero after publishing
the final status. The stall watchdog is :mod:`edge.watchdog`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.drift import DriftMonitor, DriftSink
from edge.engines import Engine
from edge.judge import Thresholds
from edge.publish import VerdictPublisher
from edge.recipes import Recipe, RecipeBook, RecipeError
from edge.sinks import HeatmapSink, PreviewSink, Sink
from edge.sources import Source
from edge.stages import Capture, End, Inference, Judge, Ledger, Publishing, Sequencer
from edge.verdict import Counters, Job
from edge.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass
class ControlRequest:
    """A validated control request (:mod:`edge.control`), a task for the publishing thread: calling it carries it
    out with ``handler`` and wakes the thread that asked."""

    request: dict
    who: str
    handler: Callable[[dict, str], dict]
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict | None = None

    def __call__(self) -> None:
        self.answer = self.handler(self.request, self.who)
        self.done.set()

    def refuse(self, error: str) -> None:
        self.answer = {"ok": False, "error": error}
        self.done.set()


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
    preview_fps: float = 2.0  # console previews on preview/<station> at most this often (0: never)
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
        sinks: list[Sink] | None = None,
        drift: DriftMonitor | None = None,
        recipes: RecipeBook | None = None,
        recipe: str | None = None,
        inference: Inference | None = None,
    ) -> None:
        """``engine`` and ``thresholds`` are the recipe in force at the start (named ``recipe``, from
        ``recipes``, the book further recipes are switched to from; None for a station run with one engine).
        ``inference``: a stage shared with other cameras' lines (started by the caller), else the line's own."""
        self.engine, self.publisher, self.options = engine, publisher, options
        self.recipes = recipes
        self.counters = Counters()
        self.stop = threading.Event()
        self.watchdog = Watchdog(options.stall_s, source.live)
        self.failure: str | None = None  # why the run ended early ("capture_failed: …"); None while all is well
        self.paused: str | None = None  # the reason, while an operator has paused the station
        self.on_heartbeat = None  # called with the health after each heartbeat (the service watchdog)
        self._published = ("ok", False)  # the health and whether a stage was stuck, as last published
        self._running = False
        self.ran = False  # run() has started the line's threads (capture will send its End)
        self._tasks: queue.Queue = queue.Queue()  # the publishing thread's inbox: jobs, End, tasks
        to_inference = inference.inbox if inference is not None else queue.Queue(maxsize=options.queue_size)
        self.ledger = Ledger(self.counters)
        self.capture = Capture(
            source, recipes.starting(recipe, engine, thresholds) if recipes else Recipe(recipe, engine, thresholds),
            self.ledger, self.watchdog, to_inference, self._tasks,
            self.stop, refusal=lambda: self.judge.refusal, paused=lambda: self.paused, report=self._report,
            fail=self._fail, switched=self._recipe_switched, max_frames=options.max_frames,
        )  # fmt: skip
        self._own_inference = inference is None
        self.inference = inference or Inference(to_inference, options.max_batch, options.batch_timeout_ms)
        self.inference.attach(self.watchdog)
        self.sequencer = Sequencer(self.ledger, options.verdict_deadline_ms)
        self.judge = Judge(options.camera)
        self._drift = DriftSink(drift, self._drift_changed, self.capture.recipe)
        own: list[Sink] = [self._drift]
        self._heatmaps = HeatmapSink(self._send_heatmap) if options.heatmaps else None
        own += [self._heatmaps] if self._heatmaps is not None else []
        self._preview = None
        if options.preview_fps > 0:
            self._preview = PreviewSink(self._send_preview, lambda: publisher.preview_wanted, options.preview_fps)
            own.append(self._preview)
        self.publishing = Publishing(
            publisher, own + list(sinks or []), self.counters, self.watchdog, self._sink_failed
        )

    def add_sink(self, sink: Sink) -> None:
        """Feed ``sink`` too (before :meth:`run`): for sinks that need the pipeline itself (snapshot, metrics)."""
        self.publishing.sinks.append(sink)

    @property
    def heatmaps_dropped(self) -> int:
        """Heatmaps of failed frames not sent: the heatmap thread was behind (0 without ``heatmaps``)."""
        return self._heatmaps.dropped if self._heatmaps is not None else 0

    @property
    def drift(self) -> DriftMonitor | None:
        """The good-score drift watch of the recipe being published (None without a calibration)."""
        return self._drift.monitor

    @property
    def recipe(self) -> Recipe:
        """The recipe in force: the next frame captured is judged by it."""
        return self.capture.recipe

    @property
    def thresholds(self) -> Thresholds:
        return self.recipe.thresholds

    @property
    def late_results(self) -> int:
        """Results that came after their frame's deadline (dropped)."""
        return self.sequencer.late_results

    # -- what other stages hand to the publishing thread ---------------------------------------------------
    def _report(self, status: dict) -> None:
        """Publish ``status`` from any thread (as a task for the publishing thread, which owns the socket)."""
        self._tasks.put(functools.partial(self.publisher.status, status))

    def _send_heatmap(self, seq: int, png: bytes) -> None:
        """From the heatmap sink's thread: the PNG goes out from the publishing thread."""
        self._tasks.put(functools.partial(self.publisher.heatmap, seq, png))

    def _send_preview(self, header: dict, jpeg: bytes) -> None:
        """From the preview sink's thread: the picture goes out from the publishing thread."""
        self._tasks.put(functools.partial(self.publisher.preview, header, jpeg))

    def _fail(self, reason: str, detail: str) -> None:
        """A stage cannot go on: stop the run (the first failure is the one reported)."""
        if self.failure is None:
            self.failure = f"{reason}: {detail}"
            log.error("stopping: %s", self.failure)
        self.stop.set()

    def _sink_failed(self, why: str) -> None:
        """A required sink broke: the frames not yet judged get ``error(sink_error)`` and the run ends."""
        self.judge.refusal = ("sink_error", f"{why}; the station is stopping")
        self._fail("sink_error", why)

    def _drift_changed(self, change: dict) -> None:
        log.warning("good-score drift %s: %s", "detected" if change["drift"] else "gone", change)
        self.publisher.status({"state": "running", "health": self.health, **change})

    # -- control (edge.control) ---------------------------------------------------------------------------
    def control(self, request: dict, who: str, timeout: float = 2.0) -> dict:
        """Carry out a validated control request (from any thread); returns the answer for the operator."""
        if request["command"] == "status":
            return {"ok": True, "status": self.status()}
        if request["command"] == "calibration":  # what a console shows beside a threshold: the good-score tail
            sidecar = self.recipe.engine.sidecar
            return {"ok": True, "score": dataclasses.asdict(sidecar.score), "calibration": sidecar.calibration}
        if request["command"] == "set_recipe":
            return self._set_recipe(request, who)
        item = ControlRequest(request, who, self._carry_out)
        if not self._running:
            return {"ok": False, "error": "the station is not running"}
        self._tasks.put(item)
        if not item.done.wait(timeout):
            return {"ok": False, "error": f"the station did not carry it out within {timeout:.0f} s (stopping?)"}
        return item.answer

    # -- recipes (edge.recipes) ----------------------------------------------------------------------------
    def _set_recipe(self, request: dict, who: str) -> dict:
        """On the caller's thread: load and warm the recipe beside the running one, then arm the switch (capture
        makes it between two frames). A refusal leaves the recipe in force untouched."""
        if self.recipes is None:
            return {"ok": False, "error": "this station runs one engine: start it with --recipes DIR --recipe NAME"}
        if not self._running:
            return {"ok": False, "error": "the station is not running"}
        if ("name" in request) == ("number" in request):
            return {"ok": False, "error": "set_recipe takes the recipe's name or its number, one of them"}
        try:
            name = request["name"] if "name" in request else self.recipes.name_of(request["number"])
            if name == self.recipe.name and "at_frame" not in request and not self.capture.armed:
                return {"ok": True, "in_force": self.recipe.describe(), "unchanged": True}
            recipe = self.recipes.load(name, self.capture.frame)
        except RecipeError as exc:
            log.warning("set_recipe by %s refused: %s", who, exc)
            return {"ok": False, "error": str(exc)}
        at_frame = request.get("at_frame")
        replaced = self.capture.arm(recipe, at_frame)
        if replaced is not None:  # armed before and never in force
            replaced.release()
        log.info("recipe %s armed by %s (%s)", recipe.name, who, f"at frame {at_frame}" if at_frame else "next frame")
        self._report(
            {
                "state": "running",
                "health": self.health,
                "control": {"command": "set_recipe", "by": who, "name": recipe.name, "at_frame": at_frame},
            }
        )
        return {"ok": True, "armed": recipe.describe(), "at_frame": at_frame}

    def _recipe_switched(self, current: Recipe, other: Recipe, frame_id: int | None, problem: str) -> None:
        """From capture: ``other`` is in force from ``frame_id`` on (``current`` retires, its engine released
        once its last frame is published), or was refused (``problem``) and is released. Engines are released
        on the publishing thread: freeing a runtime's session takes tens of milliseconds capture must not wait."""
        if problem:
            log.error("recipe %s refused at frame %s: %s", other.name, frame_id, problem)
            self._tasks.put(other.release)
            self._report(
                {"state": "running", "health": self.health, "recipe_refused": {"name": other.name, "reason": problem}}
            )
            return
        log.info("recipe %s in force from frame %s (was %s)", other.name, frame_id, current.name)
        if current.retire():
            self._tasks.put(current.release)
        self._report(
            {"state": "running", "health": self.health, "recipe": {**other.describe(), "from_frame": frame_id}}
        )

    def release_recipes(self) -> None:
        """Release the engines of the recipe in force and of one armed (at the end of the run)."""
        self.capture.recipe.release()
        armed = self.capture.disarm()
        if armed is not None:
            armed.release()

    def _carry_out(self, request: dict, who: str) -> dict:
        """On the publishing thread: change thresholds or pause state, and announce it on the status topic."""
        command = request["command"]
        if command == "set_threshold":
            for key in ("score", "pixel"):
                problem = key in request and self.recipe.engine.sidecar.score.check_threshold(key, request[key])
                if problem:
                    return {"ok": False, "error": problem}
            old = self.thresholds
            self.recipe.thresholds = Thresholds(
                request.get("score", old.score), request.get("pixel", old.pixel), "control"
            )
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
            {"state": "running", "health": self.health, "control": {"command": command, "by": who, **change}}
        )
        return {"ok": True, **change}

    # -- health ------------------------------------------------------------------------------------------
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
            "recipe": self.recipe.describe(),
            "recipes": self.recipes.names() if self.recipes is not None else [],
        }

    def stuck(self) -> str | None:
        """Why a stage has stopped moving (the service watchdog is no longer fed), or None."""
        return self.watchdog.stuck(self.sequencer.oldest_waiting())

    def degraded_reason(self) -> str | None:
        """Why the station is ``degraded``: it failed, a stage is stuck or a live source quiet, a sink broke."""
        if self.failure is not None:
            return self.failure
        return self.watchdog.stalled(self.sequencer.oldest_waiting()) or self.publishing.broken_reason()

    @property
    def health(self) -> str:
        """ok, degraded (:meth:`degraded_reason`), camera_lost, paused (by an operator), or engine_error (in the
        last 10 s)."""
        if self.capture.camera_lost:
            return "camera_lost"
        if self.paused is not None:
            return "paused"
        if time.perf_counter() - self.inference.last_error_at < 10.0:
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
            {
                "health": health,
                "counters": self.counters.to_dict(),
                "interval_s": self.options.heartbeat_s,
                "recipe": self.recipe.describe(),
            }
        )
        if self.on_heartbeat is not None:
            self.on_heartbeat(health)

    # -- the run -------------------------------------------------------------------------------------------
    def _emit(self, job: Job) -> None:
        """Judge and publish one job (on the publishing thread); its frame is settled in the ledger."""
        self.ledger.settle(job.index)
        self.publishing.publish(self.judge.message(job), job)
        if job.recipe.leave():  # the last frame of a retired recipe
            job.recipe.release()

    def run(self) -> Counters:
        """Capture, infer and publish until the source ends (or ``stop``); returns the counters."""
        threads = [threading.Thread(target=self.capture.run, name="capture", daemon=True)]
        if self._own_inference:
            threads.append(threading.Thread(target=self.inference.run, name="infer", daemon=True))
        self.publisher.status({"state": "running", "health": self.health, "camera": self.options.camera})
        self._running = self.ran = True
        for thread in threads:
            thread.start()
        total = None
        next_beat = time.monotonic()
        deadline = self.options.verdict_deadline_ms
        wake = min(self.options.heartbeat_s, deadline / 4e3) if deadline else self.options.heartbeat_s
        stuck_since: float | None = None
        while total is None or self.sequencer.next_index < total:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.options.heartbeat_s
                stuck = self.stuck()
                stuck_since = (stuck_since or time.monotonic()) if stuck else None
                if stuck and (self.stop.is_set() or time.monotonic() - stuck_since > self.options.stall_s):
                    self._abandon(stuck)
                    break
            try:
                item = self._tasks.get(timeout=max(0.0, min(wake, next_beat - time.monotonic())))
            except queue.Empty:
                item = None
            if isinstance(item, End):
                total = item.total
            elif isinstance(item, Job):
                self.sequencer.add(item)
            elif item is not None:
                item()  # a task for this thread: a status change, a control request
            for job in self.sequencer.ready():
                self._emit(job)
            if self._tasks.empty():
                self.publishing.flush()
        self._running = False
        for thread in threads:
            thread.join(timeout=1.0 if self.ledger.closed else None)
        if self._heatmaps is not None:
            self._heatmaps.close()  # its last maps join the tasks below
        if self._preview is not None:
            self._preview.close()
        while not self._tasks.empty():  # what came in at the very end
            item = self._tasks.get()
            if isinstance(item, ControlRequest):
                item.refuse("the station is stopping")
            elif callable(item):
                item()
        self.publishing.flush()
        self.heartbeat()
        return self.counters

    def _abandon(self, stuck: str) -> None:
        """A stage is stuck for good: no more frames are counted, and every frame captured and not yet published
        gets its verdict now, in order: its result where it has one, else ``error`` (``capture_failed`` while a read
        from the source hangs; ``engine_error`` otherwise: the frames sit between capture and publishing)."""
        reason = "capture_failed" if stuck.startswith("a read") else "engine_error"
        self._fail(reason, f"stuck: {stuck}")
        for job in self.sequencer.abandon(reason, f"abandoned: {stuck}"):
            self._emit(job)

    def queue_depth(self) -> int:
        """Frames waiting for inference now (for metrics)."""
        return self.inference.depth()

    def latency_summary(self) -> dict:
        """p50/p99/max of receive → verdict published over the last 10,000 frames, in ms."""
        return self.publishing.latency_summary()
