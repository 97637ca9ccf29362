"""Setting up and tearing down one station run: engine, thresholds, publisher, source, sinks, signals.

Everything that can be wrong with the set-up is found before the camera or the GPU is touched, in this order:
settings, artefact and sidecar, thresholds, the publishing port, the source; then the engine is activated.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import numpy as np

from edge.config import StationConfig
from edge.control import ControlError, ControlServer
from edge.drift import DriftMonitor
from edge.engines import EngineError, open_engine
from edge.judge import ThresholdError, Thresholds
from edge.metrics import MetricsError, StationMetrics
from edge.pipeline import Pipeline, PipelineOptions
from edge.publish import PublishError, VerdictPublisher
from edge.recipes import RecipeBook, RecipeError
from edge.security import CurveServer
from edge.sinks import JsonlSink, RejectStore
from edge.snapshot import SnapshotError, SnapshotServer
from edge.sources import SourceError, open_source
from edge.systemd import notify

log = logging.getLogger(__name__)


class RunError(Exception):
    """The station cannot start; the message says why."""


def run_station(config: StationConfig) -> int:
    """Run until the source ends or SIGINT/SIGTERM; returns the exit status: 0 after a clean drain, 1 when a stage
    failed for good (the final status and the log say which and why: systemd's ``Restart=on-failure`` restarts
    the station) or a finite source ended with every frame an error (nothing was inspected)."""
    book, recipe_camera = None, {}
    try:
        if config.recipes:
            book = RecipeBook(Path(config.recipes), config.engine_settings(), config.max_batch)
            engine, thresholds, recipe_camera = book.open(config.recipe)
        else:
            engine = open_engine(Path(config.engine), **config.engine_settings())
            thresholds = Thresholds.resolve(engine.sidecar, config.threshold, config.pixel_threshold)
        frame = engine.frame
        camera = {"width": frame.width, "height": frame.height, **config.camera_settings(), **recipe_camera}
        source = open_source(config.camera, frame.pixel_format, camera)
    except (EngineError, ThresholdError, SourceError, RecipeError) as exc:
        raise RunError(str(exc)) from exc
    max_batch = min(config.max_batch or engine.frame.max_batch, engine.frame.max_batch)
    curve = None
    if config.curve_secret:
        control_allow = Path(config.control_allow) if config.control_allow else None
        curve = CurveServer(Path(config.curve_secret), Path(config.curve_allow), control_allow)
    try:
        publisher = VerdictPublisher(config.publish, config.station, linger_ms=config.linger_ms, curve=curve)
    except PublishError as exc:
        if curve is not None:
            curve.stop()
        raise RunError(str(exc)) from exc
    sinks: list = []
    control = pipeline = None
    try:
        try:
            if config.jsonl:
                sinks.append(JsonlSink(config.jsonl))
            if config.rejects:
                limits = (config.rejects_max_files, config.rejects_max_mb)
                sinks.append(RejectStore(Path(config.rejects), engine.frame, *limits))
        except OSError as exc:
            raise RunError(
                f"cannot write to {exc.filename}: {exc.strerror}; give --jsonl/--rejects a writable place"
            ) from exc
        try:
            source.open()
        except SourceError as exc:
            if not source.live:
                raise
            # A camera absent at start is the same as one lost: the station runs, says camera_lost, and retries.
            log.warning("%s; starting without it and retrying", exc)
        engine.activate()
        engine.infer(np.zeros((max_batch, *engine.frame.frame_shape()), np.uint8))  # warm-up, and proof it runs
        options = PipelineOptions(
            station=config.station,
            camera=config.camera,
            max_batch=max_batch,
            batch_timeout_ms=config.batch_timeout_ms,
            queue_size=config.queue_size,
            heartbeat_s=config.heartbeat_s,
            max_frames=config.max_frames,
            verdict_deadline_ms=config.verdict_deadline_ms,
            heatmaps=config.heatmaps,
            stall_s=config.stall_s,
        )
        drift = DriftMonitor.from_calibration(engine.sidecar.calibration, engine.sidecar.score)
        pipeline = Pipeline(source, engine, publisher, thresholds, options, sinks, drift, book, config.recipe)
        if config.snapshot:
            sinks.append(SnapshotServer(config.snapshot, pipeline.status, curve=curve))
            pipeline.add_sink(sinks[-1])
        if config.metrics:
            sinks.append(StationMetrics(config.metrics, pipeline, engine))
            pipeline.add_sink(sinks[-1])
        if config.control:
            control = ControlServer(config.control, pipeline.control, curve=curve)
        log.info(
            "%s: %s%s (%s, %s) on %s, threshold %.4f (%s), publishing on %s",
            config.station,
            f"recipe {config.recipe}: " if config.recipe else "",
            engine.path.name,
            engine.backend,
            engine.sidecar.precision,
            config.camera,
            thresholds.score,
            thresholds.origin,
            config.publish,
        )
        waiting = config.wait_subscribers if config.wait_subscribers is not None else int(source.finite)
        if waiting:
            publisher.wait_subscribers(waiting, config.wait_timeout)
        # The service watchdog is fed while the station makes progress; a stuck stage stops feeding it.
        pipeline.on_heartbeat = lambda health: None if pipeline.stuck() else notify("WATCHDOG=1")
        notify(f"READY=1\nSTATUS={config.station}: {engine.path.name} on {config.camera}")
        previous = {s: signal.signal(s, lambda *_: pipeline.stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        started = time.perf_counter()
        try:
            counters = pipeline.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        seconds = time.perf_counter() - started
        notify("STOPPING=1")
        summary = {**counters.to_dict(), "seconds": round(seconds, 2), "latency_ms": pipeline.latency_summary()}
        final = {"state": "stopped", "final": True, "health": pipeline.health, "counters": summary}
        publisher.status(final | ({"reason": pipeline.failure} if pipeline.failure else {}))
        log.info(
            "%d frames → %d verdicts: %d pass, %d fail, %d error %s in %.1f s; receive→verdict p50 %s ms, p99 %s ms",
            counters.frames,
            counters.verdicts,
            counters.passed,
            counters.failed,
            sum(counters.errors.values()),
            dict(counters.errors) or "",
            seconds,
            summary["latency_ms"].get("p50"),
            summary["latency_ms"].get("p99"),
        )
        if pipeline.failure is not None:
            log.error("the station stopped on a failure: %s", pipeline.failure)
            return 1
        errors = sum(counters.errors.values())
        if source.finite and counters.frames and errors == counters.frames:
            reasons = ", ".join(f"{reason} {n}" for reason, n in counters.errors.most_common())
            log.error("every one of the %d frames was an error (%s): no part was inspected", counters.frames, reasons)
            return 1
        return 0
    except (SnapshotError, ControlError, MetricsError) as exc:
        raise RunError(str(exc)) from exc
    except (EngineError, SourceError) as exc:
        publisher.status({"state": "stopped", "final": True, "health": "engine_error", "reason": str(exc)})
        raise RunError(str(exc)) from exc
    finally:
        if control is not None:
            control.close()
        for sink in sinks:
            sink.close()
        if pipeline is not None:
            pipeline.release_recipes()
        engine.deactivate()
        source.close()
        publisher.close(config.linger_ms)
        if curve is not None:
            curve.stop()
