"""Prometheus metrics of a running station: ``edge-run --metrics [HOST:]PORT`` serves ``/metrics`` over HTTP.

Counters, queue depth, health and drift are read from the pipeline when Prometheus scrapes (nothing is counted
twice); the latency histograms and the camera's frame rate are fed by a sink on the publishing thread, where an
observation takes microseconds: the line never waits on metrics.

Names (label ``station`` on all): ``edge_frames_total``, ``edge_verdicts_total{verdict}``,
``edge_errors_total{reason}``, ``edge_queue_depth``, ``edge_health{health}`` (1 for the current one),
``edge_inference_seconds`` and ``edge_latency_seconds`` (frame received → verdict published) histograms,
``edge_drift_shift_std`` and ``edge_drift`` (0/1), ``edge_camera_fps``, and ``edge_engine_info`` with the
file, backend, precision and model sha256 of the engine in force, and its recipe, as labels.
"""

from __future__ import annotations

import re
import time
from collections import deque

from edge import __version__

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
except ImportError:  # the bridge extra; StationMetrics names what to install
    prometheus_client = None

HEALTH_STATES = ("ok", "degraded", "camera_lost", "paused", "engine_error")
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FPS_WINDOW_S = 5.0


class MetricsError(Exception):
    """The metrics endpoint cannot be served; the message says why."""


def listen_address(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` → (host, port); ValueError naming the problem."""
    match = re.fullmatch(r"(?:(\[[0-9a-fA-F:]+\]|[\w.-]+):)?(\d{1,5})", text.strip())
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"{text!r} is not PORT or HOST:PORT (e.g. 9100 or 127.0.0.1:9100)")
    return (match.group(1) or default_host).strip("[]"), int(match.group(2))


def serve(address: str, registry) -> tuple:
    """Serve ``registry`` on ``/metrics`` at ``address``; returns the HTTP server and its thread."""
    try:
        host, port = listen_address(address)
        return prometheus_client.start_http_server(port, host, registry=registry)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MetricsError(f"cannot serve metrics on {address}: {reason}") from exc


def stop_serving(server) -> None:
    server.shutdown()
    server.server_close()


class StationMetrics:
    """A pipeline sink that also owns the ``/metrics`` endpoint; ``close`` stops serving."""

    name, required = "metrics", False

    def __init__(self, address: str, pipeline) -> None:
        if prometheus_client is None:
            raise MetricsError("metrics need prometheus_client: pip install 'edge-inspect[bridge]'")
        station = pipeline.options.station
        self.registry = prometheus_client.CollectorRegistry()
        histogram = prometheus_client.Histogram
        self._inference = histogram(
            "edge_inference_seconds",
            "Inference time of the batch a frame was in",
            ["station"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS_S,
        ).labels(station)
        self._latency = histogram(
            "edge_latency_seconds",
            "Frame received → verdict published",
            ["station"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS_S,
        ).labels(station)
        self._received: deque[int] = deque(maxlen=20000)  # receive times (ns) of the last frames
        self.registry.register(_PipelineCollector(pipeline, self.frame_rate))
        self._server, _ = serve(address, self.registry)

    def write(self, verdict: dict, job) -> None:
        """Called on the publishing thread for every verdict."""
        latency = verdict["latency_ms"]
        if latency.get("infer") is not None:
            self._inference.observe(latency["infer"] / 1e3)
        if latency.get("total") is not None:
            self._latency.observe(latency["total"] / 1e3)
        if verdict.get("t_receive_ns"):
            self._received.append(verdict["t_receive_ns"])

    def frame_rate(self) -> float:
        """Frames received per second over the last few seconds (0 when the camera is silent)."""
        times = list(self._received)
        if not times:
            return 0.0
        now = time.time_ns()
        recent = [t for t in times if now - t <= FPS_WINDOW_S * 1e9]
        window = min(FPS_WINDOW_S, (now - times[0]) / 1e9)
        return len(recent) / window if window > 0 else 0.0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        stop_serving(self._server)


class _PipelineCollector:
    """Reads the pipeline's counters and state at scrape time (the engine: the recipe's in force)."""

    def __init__(self, pipeline, frame_rate) -> None:
        self.pipeline, self.frame_rate = pipeline, frame_rate
        self.station = pipeline.options.station

    def engine_info(self) -> dict:
        engine = self.pipeline.recipe.engine
        return {
            "engine": engine.path.name,
            "backend": engine.backend,
            "precision": str(engine.sidecar.precision),
            "model": f"sha256:{engine.sidecar.sha256}",
            "recipe": self.pipeline.recipe.name or "",
            "version": __version__,
        }

    def collect(self):
        pipeline, station = self.pipeline, [self.station]
        counters = pipeline.counters.to_dict()
        frames = CounterMetricFamily("edge_frames", "Frames captured", labels=["station"])
        frames.add_metric(station, counters["frames"])
        verdicts = CounterMetricFamily("edge_verdicts", "Verdicts published", labels=["station", "verdict"])
        for kind in ("pass", "fail", "error"):
            verdicts.add_metric([*station, kind], counters[kind])
        errors = CounterMetricFamily("edge_errors", "Error verdicts by reason", labels=["station", "reason"])
        for reason, count in sorted(counters["errors"].items()):
            errors.add_metric([*station, reason], count)
        queue = GaugeMetricFamily("edge_queue_depth", "Frames waiting for inference", labels=["station"])
        queue.add_metric(station, pipeline.queue_depth())
        health = GaugeMetricFamily("edge_health", "1 for the station's current health", labels=["station", "health"])
        current = pipeline.health
        for state in HEALTH_STATES:
            health.add_metric([*station, state], float(state == current))
        fps = GaugeMetricFamily("edge_camera_fps", "Frames received per second (last 5 s)", labels=["station"])
        fps.add_metric(station, self.frame_rate())
        info = InfoMetricFamily("edge_engine", "The engine and model the station runs", labels=["station"])
        info.add_metric(station, self.engine_info())
        yield from (frames, verdicts, errors, queue, health, fps, info)
        if pipeline.drift is not None:
            shift = pipeline.drift.shift_std()
            drift_shift = GaugeMetricFamily(
                "edge_drift_shift_std",
                "Passed parts' mean logit score minus calibration's, in calibration standard deviations",
                labels=["station"],
            )
            drift_shift.add_metric(station, float("nan") if shift is None else shift)
            drifting = GaugeMetricFamily("edge_drift", "1 while good-score drift is reported", labels=["station"])
            drifting.add_metric(station, float(pipeline.drift.drifting))
            yield from (drift_shift, drifting)
