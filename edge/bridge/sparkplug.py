"""Sparkplug B for the MQTT output (``mqtt_format = "sparkplug"``): the bridge is one edge node, each station one
device, so SCADA hosts (Ignition and others) find them by themselves. Payloads are encoded by pysparkplug (the
specification's protobuf).

Topics ``spBv1.0/GROUP/TYPE/NODE[/DEVICE]``: GROUP is ``mqtt_group``, NODE ``mqtt_client_id`` (default
``edge-bridge-HOST``), DEVICE the station's name with ``/`` written ``:`` (``line3:cam1``).

* NBIRTH on every connection (``seq`` 0): ``bdSeq`` (Int64) and ``Node Control/Rebirth`` (Boolean); the will is
  the NDEATH with the same ``bdSeq``, which counts connections 0…255 and is kept across restarts.
* DBIRTH per station, then DDATA per verdict and per state change, DDEATH when a station goes offline (DBIRTH
  again when it is back). ``seq`` counts every message after NBIRTH, 0…255 and round again.
* A host's NCMD ``Node Control/Rebirth = true`` makes the node send NBIRTH and every DBIRTH again.

Device metrics (docs/plc.md, "Sparkplug B"): ``Verdict``, ``Reason``, ``State``, ``Health``, ``Recipe``, ``Model``,
``RunId`` (String); ``Seq``, ``FrameId``, ``Passed``, ``Failed``, ``Errors``, ``Missed`` (Int64); ``Score``,
``Threshold`` (Double, null on error verdicts). Verdicts sent after a reconnect that were queued before it are
marked historical. Consumers drop repeats (QoS 1) by ``RunId`` and ``Seq``.
"""

from __future__ import annotations

import json
import time

from pysparkplug import DataType, DBirth, DData, DDeath, MessageType, Metric, NBirth, NDeath, Topic

STRING, INT64, DOUBLE, BOOLEAN = DataType.STRING, DataType.INT64, DataType.DOUBLE, DataType.BOOLEAN
VERDICT_METRICS = {  # metric → (type, verdict field)
    "Verdict": (STRING, "verdict"),
    "Reason": (STRING, "reason"),
    "Seq": (INT64, "seq"),
    "FrameId": (INT64, "frame_id"),
    "Score": (DOUBLE, "score"),
    "Threshold": (DOUBLE, "threshold"),
    "RunId": (STRING, "run_id"),
    "Model": (STRING, "model"),
    "Recipe": (STRING, "recipe"),
}
STATE_METRICS = {  # metric → (type, state field)
    "State": (STRING, "state"),
    "Health": (STRING, "health"),
    "Passed": (INT64, "pass"),
    "Failed": (INT64, "fail"),
    "Errors": (INT64, "error"),
    "Missed": (INT64, "missed"),
}
REBIRTH = "Node Control/Rebirth"


def device_id(station: str) -> str:
    return station.replace("/", ":")


def _metric(name: str, datatype: DataType, value, ms: int, historical: bool = False) -> Metric:
    if value is None:
        return Metric(timestamp=ms, name=name, datatype=datatype, is_null=True, is_historical=historical)
    return Metric(timestamp=ms, name=name, datatype=datatype, value=value, is_historical=historical)


def _state_values(state: dict) -> dict:
    return {**state["counters"], "state": state["state"], "health": state["health"]}


class SparkplugTopics:
    """Sparkplug B messages for :class:`edge.bridge.mqtt.MqttOutput` (used from its worker thread only)."""

    def __init__(self, settings) -> None:
        self.group, self.node = settings.group, settings.node
        self.bd_seq = -1  # of the connection being made (the will's); set from the queue at start
        self.seq = 0
        self._born: set[str] = set()
        self._store = None

    def resume(self, store) -> None:
        """At start: the last connection's bdSeq, so the next one counts on."""
        self._store = store
        self.bd_seq = store.meta("sparkplug_bd_seq", -1)

    def will(self) -> tuple[str, bytes, bool]:
        """The NDEATH of the next connection (each connection its own bdSeq)."""
        self.bd_seq = (self.bd_seq + 1) % 256
        death = NDeath(timestamp=_ms(), bd_seq_metric=_metric("bdSeq", INT64, self.bd_seq, _ms()))
        return self._topic(MessageType.NDEATH), death.encode(), False

    def connected_as(self, store) -> None:
        store.set_meta("sparkplug_bd_seq", self.bd_seq)

    def connected(self, states: dict[str, dict]) -> list[tuple[str, bytes, bool]]:
        """NBIRTH, then every station's DBIRTH (and DDEATH for those offline)."""
        ms = _ms()
        self.seq, self._born = 0, set()
        metrics = (_metric("bdSeq", INT64, self.bd_seq, ms), _metric(REBIRTH, BOOLEAN, False, ms))
        messages = [(self._topic(MessageType.NBIRTH), NBirth(timestamp=ms, seq=0, metrics=metrics).encode(), False)]
        for state in states.values():
            messages += self._birth(state)
            if state["state"] == "offline":
                messages += self._death(state["station"])
        return messages

    def state_changed(self, state: dict) -> list[tuple[str, bytes, bool]]:
        station = state["station"]
        if state["state"] == "offline":
            return self._death(station) if station in self._born else []
        if station not in self._born:
            return self._birth(state)
        ms = _ms()
        values = _state_values(state) | {"recipe": state["recipe"], "model": state["model"]}
        metrics = [_metric(name, kind, values[key], ms) for name, (kind, key) in STATE_METRICS.items()]
        metrics += [_metric(n, STRING, values[k], ms) for n, k in (("Recipe", "recipe"), ("Model", "model"))]
        return [self._data(station, metrics)]

    def verdict(self, station: str, verdict: str, historical: bool) -> list[tuple[str, bytes]]:
        """DDATA of one verdict (after a DBIRTH if the station is not born in this session)."""
        message = json.loads(verdict)
        ms = int(message.get("t_publish_ns", time.time_ns()) // 1_000_000)
        metrics = [
            _metric(name, kind, message.get(key), ms, historical) for name, (kind, key) in VERDICT_METRICS.items()
        ]
        births = []
        if station not in self._born:
            births = [(topic, body) for topic, body, _ in self._birth({"station": station, **_unknown_state()})]
        return [*births, self._data(station, metrics)[:2]]

    def closing(self) -> list[tuple[str, bytes, bool]]:
        """A clean stop says what the will would have: the node is gone."""
        death = NDeath(timestamp=_ms(), bd_seq_metric=_metric("bdSeq", INT64, self.bd_seq, _ms()))
        return [(self._topic(MessageType.NDEATH), death.encode(), False)]

    def command_topic(self) -> str:
        return self._topic(MessageType.NCMD)

    @staticmethod
    def asks_rebirth(payload: bytes) -> bool:
        """Whether an NCMD asks for a rebirth."""
        from pysparkplug import NCmd

        try:
            command = NCmd.decode(payload)
        except Exception:  # a host's malformed command: ignored
            return False
        return any(m.name == REBIRTH and m.value is True for m in command.metrics)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _topic(self, kind: MessageType, station: str | None = None) -> str:
        device = device_id(station) if station is not None else None
        return str(Topic(group_id=self.group, message_type=kind, edge_node_id=self.node, device_id=device))

    def _birth(self, state: dict) -> list[tuple[str, bytes, bool]]:
        ms = _ms()
        values = _state_values(state)
        metrics = [_metric(name, kind, None, ms) for name, (kind, _) in VERDICT_METRICS.items()]
        metrics[-2:] = [
            _metric("Model", STRING, state.get("model"), ms),
            _metric("Recipe", STRING, state["recipe"], ms),
        ]
        metrics += [_metric(name, kind, values[key], ms) for name, (kind, key) in STATE_METRICS.items()]
        self._born.add(state["station"])
        body = DBirth(timestamp=ms, seq=self._next_seq(), metrics=tuple(metrics)).encode()
        return [(self._topic(MessageType.DBIRTH, state["station"]), body, False)]

    def _death(self, station: str) -> list[tuple[str, bytes, bool]]:
        self._born.discard(station)
        body = DDeath(timestamp=_ms(), seq=self._next_seq()).encode()
        return [(self._topic(MessageType.DDEATH, station), body, False)]

    def _data(self, station: str, metrics: list[Metric]) -> tuple[str, bytes, bool]:
        body = DData(timestamp=_ms(), seq=self._next_seq(), metrics=tuple(metrics)).encode(include_dtypes=True)
        return self._topic(MessageType.DDATA, station), body, False


def _unknown_state() -> dict:
    counters = {"pass": 0, "fail": 0, "error": 0, "missed": 0}
    return {"state": "offline", "health": "unknown", "counters": counters, "recipe": None, "model": None}


def _ms() -> int:
    return time.time_ns() // 1_000_000
