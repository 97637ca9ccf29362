"""Setting up and tearing down one station run: engine, thresholds, publisher, source, sinks, signals.

Everything that can be wrong with the set-up is found before the camera or the GPU is touched, in this order:
settings, artefact and sidecar, thresholds, the publishing port, the source; then the engine is activated.

A station of several cameras (``--camera`` once per camera) runs one line per camera, each a station of its own
(``STATION/cam1``, ``STATION/cam2``, …: its own ``seq``, counters, heartbeats, reconnects and triggers, on the
given endpoints and ports plus 10 per camera: :func:`camera_config`), and one engine for them all: a
shared inference stage fills its batches across cameras. A camera lost does not stop the others.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.config import StationConfig
from edge.control import ControlError, ControlServer
from edge.drift import DriftMonitor
from edge.engines import EngineError, open_engine
from edge.judge import ThresholdError, Thresholds
from edge.metrics import MetricsError, StationMetrics
from edge.pipeline import Pipeline, PipelineOptions
from edge.publish import PublishError, VerdictPublisher, new_run_id
from edge.recipes import Recipe, RecipeBook, RecipeError
from edge.security import CurveServer
from edge.sinks import JsonlSink, RejectStore
from edge.snapshot import SnapshotError, SnapshotServer
from edge.sources import SourceError, open_source
from edge.stages import End, Inference
from edge.systemd import notify

log = logging.getLogger(__name__)


class RunError(Exception):
    """The station cannot start; the message says why."""


PORT_STEP = 10  # camera N's ports: the given ones plus 10·(N−1), clear of the station's neighbouring ports


def offset_endpoint(endpoint: str, index: int) -> str:
    """The endpoint of camera ``index`` (0: ``endpoint`` itself): a TCP port plus ``PORT_STEP·index``, an IPC
    path with ``-camN``."""
    if index == 0:
        return endpoint
    match = re.fullmatch(r"(.*:)?(\d+)", endpoint)  # tcp://HOST:PORT, HOST:PORT or PORT
    if match:
        return f"{match.group(1) or ''}{int(match.group(2)) + PORT_STEP * index}"
    return f"{endpoint}-cam{index + 1}"


def camera_config(config: StationConfig, index: int) -> StationConfig:
    """Camera ``index``'s own station settings in a station of several cameras: its URI, the name
    ``STATION/camN``, its recipe to start with (``--recipe`` once per camera, or the one for all), the publish,
    control and snapshot endpoints and the metrics port moved by :data:`PORT_STEP` per camera, the JSON-lines file
    ``NAME-camN.EXT`` and the reject records in ``REJECTS/camN`` (standard output is shared)."""
    n = index + 1
    jsonl = config.jsonl
    if jsonl and jsonl != "-":
        path = Path(jsonl)
        jsonl = str(path.with_name(f"{path.stem}-cam{n}{path.suffix}"))
    moved = {key: getattr(config, key) for key in ("control", "snapshot", "metrics")}
    return dataclasses.replace(
        config,
        camera=(config.camera[index],),
        recipe=config.recipe[index : index + 1] if len(config.recipe) > 1 else config.recipe,
        station=f"{config.station}/cam{n}",
        publish=offset_endpoint(config.publish, index),
        jsonl=jsonl,
        rejects=str(Path(config.rejects) / f"cam{n}") if config.rejects else None,
        **{key: offset_endpoint(value, index) if value else value for key, value in moved.items()},
    )


def run_station(config: StationConfig) -> int:
    """Run until the sources end or SIGINT/SIGTERM; returns the exit status: 0 after a clean drain, 1 when a stage
    failed for good (the final status and the log say which and why: systemd's ``Restart=on-failure`` restarts
    the station) or a finite source ended with every frame an error (nothing was inspected); with several
    cameras, the highest of their lines'."""
    try:
        book = RecipeBook(Path(config.recipes), config.engine_settings(), config.max_batch) if config.recipes else None
        if len(config.camera) > 1:
            return _run_cameras(config, book)
        recipe_camera = {}
        if book is not None:
            engine, thresholds, recipe_camera = book.open(config.recipe[0])
            book.adopt(engine, 1)  # the line releases it once it is done with it
        else:
            engine = open_engine(Path(config.engine), **config.engine_settings())
            thresholds = Thresholds.resolve(engine.sidecar, config.threshold, config.pixel_threshold)
    except (EngineError, ThresholdError, RecipeError) as exc:
        raise RunError(str(exc)) from exc
    max_batch = min(config.max_batch or engine.frame.max_batch, engine.frame.max_batch)
    pipelines: list[Pipeline] = []
    try:
        return _run_line(
            config, engine=engine, thresholds=thresholds, book=book, recipe_camera=recipe_camera,
            max_batch=max_batch, started=pipelines.append, warm=True,
        )  # fmt: skip
    finally:
        for pipeline in pipelines:
            pipeline.release_recipes()
        engine.deactivate()


def _starting_recipes(config: StationConfig, configs: list[StationConfig], book: RecipeBook | None) -> list[Recipe]:
    """Each camera's recipe to start with, its engine activated and warmed: one engine per distinct artefact (the
    book shares them), or the station's one engine without recipes."""
    if book is not None:
        recipes: list[Recipe] = []
        try:
            for camera in configs:
                recipes.append(book.load(camera.recipe[0]))
        except RecipeError as exc:
            for recipe in recipes:
                recipe.release()
            raise RunError(str(exc)) from exc
        return recipes
    try:
        engine = open_engine(Path(config.engine), **config.engine_settings())
        thresholds = Thresholds.resolve(engine.sidecar, config.threshold, config.pixel_threshold)
        batch = min(config.max_batch or engine.frame.max_batch, engine.frame.max_batch)
        engine.activate()
        engine.infer(np.zeros((batch, *engine.frame.frame_shape()), np.uint8))  # warm-up, and proof it runs
    except (EngineError, ThresholdError) as exc:
        raise RunError(str(exc)) from exc
    return [Recipe(None, engine, Thresholds(thresholds.score, thresholds.pixel, thresholds.origin)) for _ in configs]


def _run_cameras(config: StationConfig, book: RecipeBook | None) -> int:
    """One line per camera on threads, one shared inference stage; the exit status is the highest of theirs."""
    configs = [camera_config(config, i) for i in range(len(config.camera))]
    starts = _starting_recipes(config, configs, book)
    max_batch = max(min(config.max_batch or r.engine.frame.max_batch, r.engine.frame.max_batch) for r in starts)
    inference = Inference(
        queue.Queue(maxsize=config.queue_size * len(configs)), max_batch, config.batch_timeout_ms, len(configs)
    )
    pipelines: dict[int, Pipeline] = {}
    results: dict[int, int | str] = {}
    run_id = new_run_id()  # one run of the station: every camera's messages carry it

    def serve(index: int) -> None:
        def started(pipeline: Pipeline) -> None:
            pipelines[index] = pipeline

        start = starts[index]
        try:
            results[index] = _run_line(
                configs[index], engine=start.engine, thresholds=start.thresholds, book=book,
                recipe_camera=start.camera, max_batch=max_batch, started=started, inference=inference,
                run_id=run_id,
            )  # fmt: skip
        except Exception as exc:  # this camera's line could not start: the others go on
            results[index] = str(exc)
            if index not in pipelines or not pipelines[index].ran:
                inference.inbox.put(End(0, queue.Queue()))  # the shared stage waits for no frames of it
        if results[index] == 1:  # a line failed for good: the station stops, to be restarted whole
            stop_all()

    threads = [threading.Thread(target=serve, args=(i,), name=f"line{i + 1}") for i in range(len(configs))]
    threading.Thread(target=inference.run, name="infer", daemon=True).start()

    def stop_all(*_) -> None:
        for pipeline in list(pipelines.values()):
            pipeline.stop.set()

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for index, start in enumerate(starts):
            if index in pipelines:
                pipelines[index].release_recipes()  # what the line runs now (its first recipe, or a later one)
            else:
                start.release()
    failed = {configs[i].station: why for i, why in results.items() if isinstance(why, str)}
    for station, why in failed.items():
        log.error("%s did not run: %s", station, why)
    if len(failed) == len(configs):
        raise RunError(f"no camera's line could start: {next(iter(failed.values()))}")
    return max(1 if isinstance(code, str) else code for code in results.values())


def _run_line(
    config: StationConfig,
    *,
    engine,
    thresholds: Thresholds,
    book: RecipeBook | None,
    recipe_camera: dict,
    max_batch: int,
    started: Callable[[Pipeline], None],
    warm: bool = False,
    inference: Inference | None = None,
    run_id: str | None = None,
) -> int:
    """One camera's line, from its source to its final status; ``started(pipeline)`` before it runs. ``warm``:
    activate and warm the engine here (one camera); else the caller has, and ``inference`` is shared. The
    engine and the recipes are the caller's to release."""
    frame = engine.frame
    camera = {"width": frame.width, "height": frame.height, **config.camera_settings(), **recipe_camera}
    try:
        source = open_source(config.camera[0], frame.pixel_format, camera)
    except SourceError as exc:
        raise RunError(str(exc)) from exc
    curve = None
    if config.curve_secret:
        control_allow = Path(config.control_allow) if config.control_allow else None
        curve = CurveServer(Path(config.curve_secret), Path(config.curve_allow), control_allow)
    try:
        publisher = VerdictPublisher(
            config.publish, config.station, linger_ms=config.linger_ms, curve=curve, run_id=run_id
        )
    except PublishError as exc:
        if curve is not None:
            curve.stop()
        raise RunError(str(exc)) from exc
    sinks: list = []
    control = None
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
        if warm:
            engine.activate()
            engine.infer(np.zeros((max_batch, *engine.frame.frame_shape()), np.uint8))  # warm-up, and proof it runs
        options = PipelineOptions(
            station=config.station,
            camera=config.camera[0],
            max_batch=max_batch,
            batch_timeout_ms=config.batch_timeout_ms,
            queue_size=config.queue_size,
            heartbeat_s=config.heartbeat_s,
            max_frames=config.max_frames,
            verdict_deadline_ms=config.verdict_deadline_ms,
            heatmaps=config.heatmaps,
            preview_fps=config.preview_fps,
            stall_s=config.stall_s,
        )
        drift = DriftMonitor.from_calibration(engine.sidecar.calibration, engine.sidecar.score)
        recipe = config.recipe[0] if config.recipe else None
        pipeline = Pipeline(source, engine, publisher, thresholds, options, sinks, drift, book, recipe, inference)
        started(pipeline)
        if config.snapshot:
            sinks.append(SnapshotServer(config.snapshot, pipeline.status, curve=curve))
            pipeline.add_sink(sinks[-1])
        if config.metrics:
            sinks.append(StationMetrics(config.metrics, pipeline))
            pipeline.add_sink(sinks[-1])
        if config.control:
            control = ControlServer(config.control, pipeline.control, curve=curve)
        log.info(
            "%s: %s%s (%s, %s) on %s, threshold %.4f (%s), publishing on %s",
            config.station,
            f"recipe {config.recipe[0]}: " if config.recipe else "",
            engine.path.name,
            engine.backend,
            engine.sidecar.precision,
            config.camera[0],
            thresholds.score,
            thresholds.origin,
            config.publish,
        )
        # A finite source waits for one subscriber, unless its verdicts go to a file: none is lost either way.
        default = int(source.finite and not config.jsonl)
        waiting = config.wait_subscribers if config.wait_subscribers is not None else default
        if waiting:
            publisher.wait_subscribers(waiting, config.wait_timeout)
        # The service watchdog is fed while the station makes progress; a stuck stage stops feeding it.
        pipeline.on_heartbeat = lambda health: None if pipeline.stuck() else notify("WATCHDOG=1")
        notify(f"READY=1\nSTATUS={config.station}: {engine.path.name} on {config.camera[0]}")
        previous = {}
        if warm:  # one camera: this is the main thread
            previous = {s: signal.signal(s, lambda *_: pipeline.stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        begun = time.perf_counter()
        try:
            counters = pipeline.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        seconds = time.perf_counter() - begun
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
        source.close()
        publisher.close(config.linger_ms)
        if curve is not None:
            curve.stop()
