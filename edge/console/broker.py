"""Many stations from the plant's broker: the console's fleet view reads what ``edge-bridge --mqtt`` publishes
(JSON format) under a prefix — each station's retained ``PREFIX/STATION/state`` and its
``PREFIX/STATION/verdict`` messages, and the bridges' own ``PREFIX/bridge/ID`` (a bridge gone offline takes its
stations with it) — instead of subscribing to every station. Stations found there have no live view or controls
(those need the station's own endpoints: ``--station``)."""

from __future__ import annotations

import json
import logging
import time

from edge.bridge.config import StationLink
from edge.bridge.mqtt import broker as parse_broker
from edge.bridge.station import Received

log = logging.getLogger(__name__)


class BrokerFollower:
    """A paho client on the broker feeding ``fleet`` (its own network thread); start and stop with the fleet."""

    def __init__(self, fleet, url: str, prefix: str) -> None:
        import paho.mqtt.client as paho

        self.fleet, self.prefix = fleet, prefix.rstrip("/")
        self.scheme, self.host, self.port = parse_broker(url)
        self._bridges: dict[str, list[str]] = {}  # bridge id → the stations it said it serves
        if hasattr(paho, "CallbackAPIVersion"):  # paho-mqtt 2
            self._client = paho.Client(paho.CallbackAPIVersion.VERSION1, clean_session=True)
        else:
            self._client = paho.Client(clean_session=True)
        if self.scheme == "mqtts":
            self._client.tls_set()
        self._client.on_connect = lambda client, *_: client.subscribe(f"{self.prefix}/#", qos=1)
        self._client.on_message = lambda client, userdata, message: self._message(message.topic, message.payload)

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=10)
        self._client.loop_start()
        log.info("following the stations under %s/ on %s:%d", self.prefix, self.host, self.port)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix + "/"):
            return
        path, _, kind = topic[len(self.prefix) + 1 :].rpartition("/")
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict) or not path:
            return
        if path == "bridge":
            self._bridge(kind, message)
            return
        station = self.fleet.station_for(StationLink(name=path, verdicts=""))
        if kind == "state":
            station.take_state(message)
        elif kind == "verdict" and isinstance(message.get("seq"), int):
            station.apply(Received("verdict", message, 0, time.time_ns()))

    def _bridge(self, bridge: str, message: dict) -> None:
        if message.get("state") == "online" and isinstance(message.get("stations"), list):
            self._bridges[bridge] = [str(name) for name in message["stations"]]
        elif message.get("state") == "offline":
            for name in self._bridges.get(bridge, []):
                station = self.fleet.stations.get(name)
                if station is not None:
                    station.take_state({"state": "offline"})
