"""Prometheus metrics of the bridge (``edge-bridge --metrics [HOST:]PORT``, ``/metrics``).

* ``edge_bridge_messages_total{station,kind}``: verdict, heartbeat and status messages received;
* ``edge_bridge_missed_total{station}``: verdicts lost on the way (gaps in seq, malformed verdicts);
* ``edge_bridge_malformed_total{station}``: messages skipped;
* ``edge_bridge_latency_seconds{protocol}``: the station's publish → the value written on OPC UA, or the result
  presented on Modbus (which includes any wait in the queue for the PLC's acknowledge);
* ``edge_bridge_clients{protocol}``: connected OPC UA and Modbus clients;
* ``edge_bridge_station_state{station,state}``: 1 for the current state;
* ``edge_bridge_modbus_queue_depth{station}``, ``edge_bridge_modbus_overflow_total{station}``,
  ``edge_bridge_modbus_refused_total{station}`` (acknowledges of a result that was not presented);
* ``edge_bridge_info{version}``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from edge import __version__
from edge.bridge.station import STATES
from edge.metrics import serve, stop_serving

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the bridge extra; edge-bridge names what to install
    prometheus_client = None

LATENCY_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class BridgeMetrics:
    """Counts from the feeds' threads and the outputs; ``serve`` exposes them (``close`` stops)."""

    def __init__(self) -> None:
        registry = self.registry = prometheus_client.CollectorRegistry()
        counter, histogram = prometheus_client.Counter, prometheus_client.Histogram
        self._messages = counter(
            "edge_bridge_messages", "Messages received from stations", ["station", "kind"], registry=registry
        )
        self._missed = counter(
            "edge_bridge_missed", "Verdicts lost on the way (gaps in seq)", ["station"], registry=registry
        )
        self._malformed = counter("edge_bridge_malformed", "Malformed messages skipped", ["station"], registry=registry)
        self._latency = histogram(
            "edge_bridge_latency_seconds",
            "Verdict published by the station → value written (OPC UA) or result presented (Modbus)",
            ["protocol"],
            registry=registry,
            buckets=LATENCY_BUCKETS_S,
        )
        prometheus_client.Info("edge_bridge", "The bridge", registry=registry).info({"version": __version__})
        self.latencies: dict[str, deque[float]] = {}  # the last 10,000 per protocol, in seconds, for the summary
        self._server = None

    def received(self, station: str, kind: str, missed: int) -> None:
        self._messages.labels(station, kind).inc()
        if missed:
            self._missed.labels(station).inc(missed)

    def malformed(self, station: str, count: int) -> None:
        self._malformed.labels(station).inc(count)

    def written(self, protocol: str, t_publish_ns: int) -> None:
        seconds = max(0.0, (time.time_ns() - t_publish_ns) / 1e9)
        self._latency.labels(protocol).observe(seconds)
        self.latencies.setdefault(protocol, deque(maxlen=10000)).append(seconds)

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """p50/p99/max in ms per protocol over the last 10,000 values."""
        summary = {}
        for protocol, values in self.latencies.items():
            if values:
                array = np.asarray(values) * 1e3
                summary[protocol] = {
                    "p50": round(float(np.percentile(array, 50)), 3),
                    "p99": round(float(np.percentile(array, 99)), 3),
                    "max": round(float(array.max()), 3),
                }
        return summary

    def watch(self, views, outputs) -> None:
        """Report the stations' states and the outputs' clients and own metrics when scraped."""
        self.registry.register(_BridgeCollector(views, outputs))

    def serve(self, address: str) -> None:
        self._server, _ = serve(address, self.registry)

    def close(self) -> None:
        if self._server is not None:
            stop_serving(self._server)


class _BridgeCollector:
    def __init__(self, views, outputs) -> None:
        self.views, self.outputs = views, outputs

    def collect(self):
        clients = GaugeMetricFamily("edge_bridge_clients", "Connected clients", labels=["protocol"])
        for output in self.outputs:
            clients.add_metric([output.name], output.clients())
        state = GaugeMetricFamily("edge_bridge_station_state", "1 for the station's state", labels=["station", "state"])
        for view in self.views:
            for name in STATES:
                state.add_metric([view.name, name], float(view.state == name))
        yield from (clients, state)
        for output in self.outputs:
            yield from output.metric_families()
