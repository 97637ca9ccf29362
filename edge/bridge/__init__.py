"""``edge-bridge``: a station's verdicts for PLCs and plant software that do not speak ZeroMQ.

It subscribes to one or more stations like any other client (the line never waits on it) and serves what it
receives on OPC UA (:mod:`edge.bridge.opcua`), Modbus TCP with a result handshake (:mod:`edge.bridge.modbus`) and
Prometheus metrics (:mod:`edge.bridge.metrics`). Its libraries come with the ``bridge`` extra
(``pip install 'edge-inspect[bridge]'``); without them ``edge-bridge`` says so and stops.
"""

from __future__ import annotations

import importlib.util

LIBRARIES = ("asyncua", "pymodbus", "prometheus_client")


def missing_libraries(names: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Those of ``names`` that are not installed."""
    return [name for name in names if importlib.util.find_spec(name) is None]
