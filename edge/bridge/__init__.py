"""``edge-bridge``: a station's verdicts for PLCs and plant software that do not speak ZeroMQ.

It subscribes to one or more stations like any other client (the line never waits on it) and serves what it
receives on OPC UA (:mod:`edge.bridge.opcua`), Modbus TCP with a result handshake (:mod:`edge.bridge.modbus`), MQTT
into the plant's broker (:mod:`edge.bridge.mqtt`, JSON or Sparkplug B) and Prometheus metrics
(:mod:`edge.bridge.metrics`). Its libraries come with the ``bridge`` extra
(``pip install 'edge-inspect[bridge]'``); without them ``edge-bridge`` says so and stops.
"""

from __future__ import annotations

import socket

LIBRARIES = ("asyncua", "pymodbus", "prometheus_client", "paho", "pysparkplug")  # the bridge extra's


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (the system's words), or None when it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
