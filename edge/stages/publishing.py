"""The publishing stage: each judged verdict goes out on ZeroMQ (which gives it its ``seq``), is counted, and is
fed to every sink (JSON lines, rejects, heatmaps, drift, metrics, snapshot). A sink that raises is left out from
then on (health ``degraded``); a required one (the JSON-lines record) stops the line instead."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from edge.publish import VerdictPublisher
from edge.sinks import Sink
from edge.verdict import Counters, Job
from edge.watchdog import Watchdog

log = logging.getLogger(__name__)


class Publishing:
    """Publish, count, feed the sinks; ``required_failed(why)`` is called when a required sink breaks."""

    def __init__(
        self,
        publisher: VerdictPublisher,
        sinks: list[Sink],
        counters: Counters,
        watchdog: Watchdog,
        required_failed: Callable[[str], None],
    ) -> None:
        self.publisher, self.sinks, self.counters, self.watchdog = publisher, sinks, counters, watchdog
        self.required_failed = required_failed
        self.latencies: deque[float] = deque(maxlen=10000)  # the last 10,000 frames: bounded for months of running
        self.broken: dict[int, str] = {}  # id(sink) → why, for best-effort sinks that failed

    def publish(self, message: dict, job: Job) -> dict:
        """Publish the judged ``message`` of ``job``; returns it as sent."""
        self.counters.count_verdict(message)
        message, job.record = self.publisher.verdict_and_json(message)
        self.watchdog.verdict_published(time.perf_counter())
        if message["latency_ms"]["total"] is not None:
            self.latencies.append(message["latency_ms"]["total"])
        for sink in self.sinks:
            if id(sink) not in self.broken:
                self._feed(sink, message, job)
        return message

    def flush(self) -> None:
        """Nothing waits: let every sink bring what it holds to its target (the JSON-lines file's buffer)."""
        for sink in self.sinks:
            if id(sink) not in self.broken:
                self._feed(sink, None, None)

    def _feed(self, sink: Sink, message: dict | None, job: Job | None) -> None:
        """``sink.write(message, job)``, or ``sink.flush()`` without a message, with the sink's failure handled."""
        try:
            if message is None:
                sink.flush()
            else:
                sink.write(message, job)
        except Exception as exc:
            why = f"{sink.name} sink: {type(exc).__name__}: {str(exc)[:200]}"
            self.broken[id(sink)] = why
            if sink.required:
                self.required_failed(why)
            else:
                log.error("%s: left out for the rest of the run (verdicts are unaffected)", why)

    def broken_reason(self) -> str | None:
        """Why a best-effort sink was left out (the first one), or None."""
        return next(iter(self.broken.values()), None)

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
