"""MQTT into the plant's broker (paho-mqtt): every verdict, each station's state, and a last will; verdicts are
stored on disk and forwarded in order, so a broker outage loses none that fits the queue's bounds.

Topics, JSON (``mqtt_format = "json"``, the default), with ``PREFIX`` = ``mqtt_prefix`` (e.g. ``site/area/line``):

==============================  ====  ========  =======================================================
topic                           QoS   retained  payload
==============================  ====  ========  =======================================================
``PREFIX/STATION/verdict``      1     no        the verdict message as the schema defines it
``PREFIX/STATION/state``        1     yes       state, health, counters, recipe, model, run_id, last_seq
``PREFIX/bridge/CLIENT_ID``     1     yes       ``{"state": "online", …}``; the will sets ``"offline"``
==============================  ====  ========  =======================================================

QoS 1 delivers at least once: a verdict may arrive twice after a reconnect; consumers drop repeats by
``(run_id, seq)``. With ``mqtt_format = "sparkplug"`` the bridge is a Sparkplug B edge node
(:mod:`edge.bridge.sparkplug`) instead.

Store and forward: each verdict is written to a SQLite queue in ``mqtt_queue`` (a folder) before it is sent, and
removed only when the broker acknowledges it (PUBACK). While the broker is unreachable verdicts wait there (a
bridge restart keeps them) and go out in order once it is back; past ``mqtt_queue_mb`` or ``mqtt_queue_hours``
the oldest are dropped, counted and logged. States are not queued: the latest is sent (retained) on connecting.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edge.bridge.outputs import OFF, OutputError, OutputKind, register_output
from edge.bridge.station import StationView
from edge.config import ConfigError

try:
    import paho.mqtt.client as paho
except ImportError:  # the bridge extra; edge-bridge names what to install
    paho = None

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:
    CounterMetricFamily = GaugeMetricFamily = None

log = logging.getLogger(__name__)

FORMATS = ("json", "sparkplug")
SCHEMES = {"mqtt": 1883, "mqtts": 8883}


class MqttError(OutputError):
    """The MQTT output cannot start; the message says why."""


@dataclass
class MqttSettings:
    """``mqtt = …`` and ``mqtt_*`` in ``[bridge]``; ``--mqtt`` and ``--mqtt-*`` flags."""

    address: str = field(default=OFF, metadata={"help": "broker mqtt://HOST[:1883] or mqtts://HOST[:8883], or off"})
    prefix: str = field(default="edge", metadata={"help": "topic prefix, e.g. site/area/line (JSON format)"})
    format: str = field(default="json", metadata={"help": "json, or sparkplug (Sparkplug B)", "choices": FORMATS})
    group: str = field(default="edge", metadata={"help": "Sparkplug group id"})
    client_id: str = field(
        default="", metadata={"help": "MQTT client id, also the Sparkplug edge node id (default: edge-bridge-HOST)"}
    )
    username: str | None = field(default=None, metadata={"help": "broker user name"})
    password_file: str | None = field(default=None, metadata={"help": "file holding the broker password"})
    ca: str | None = field(default=None, metadata={"help": "mqtts: CA certificate to trust (default: the system's)"})
    certificate: str | None = field(default=None, metadata={"help": "mqtts: client certificate (PEM)"})
    private_key: str | None = field(default=None, metadata={"help": "mqtts: its private key (PEM)"})
    queue: str = field(default="mqtt-queue", metadata={"help": "store-and-forward folder (kept across restarts)"})
    queue_mb: float = field(default=200.0, metadata={"help": "queue bound in MB: past it the oldest are dropped"})
    queue_hours: float = field(default=72.0, metadata={"help": "queue bound in hours: older verdicts are dropped"})

    def check(self) -> None:
        broker(self.address)
        if self.format not in FORMATS:
            raise ConfigError(f"mqtt_format = {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.queue_mb <= 0 or self.queue_hours <= 0:
            raise ConfigError("mqtt_queue_mb and mqtt_queue_hours must be positive")
        if any(c in self.prefix for c in "+#") or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ConfigError(f"mqtt_prefix = {self.prefix!r}: levels joined by '/', no '+', '#' or outer '/'")
        if (self.certificate is None) != (self.private_key is None):
            raise ConfigError("mqtt_certificate needs mqtt_private_key, and the other way round")
        for key in ("password_file", "ca", "certificate", "private_key"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt_{key} = {path!r}: no such file")

    @property
    def node(self) -> str:
        return self.client_id or f"edge-bridge-{socket.gethostname()}"


def broker(address: str) -> tuple[str, str, int]:
    """``mqtt[s]://HOST[:PORT]`` → (scheme, host, port); ConfigError naming the problem."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in SCHEMES or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise ConfigError(f"mqtt = {address!r}: write mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    return parts.scheme, parts.hostname, port or SCHEMES[parts.scheme]


class DiskQueue:
    """Verdicts waiting for the broker's acknowledgement, in order, in one SQLite file; bounded by size and age.
    Used from one thread only (the output's worker)."""

    def __init__(self, folder: Path, max_bytes: int, max_age_s: float) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(folder / "mqtt-queue.sqlite3", isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, station TEXT, "
                "payload TEXT, t REAL, size INTEGER)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
            self.count, self.bytes = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM queue").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise MqttError(f"cannot keep the MQTT queue in {folder}: {exc}") from exc
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self.dropped = 0
        self._in_transaction = False

    def append(self, station: str, payload: str) -> None:
        self._begin()
        self._db.execute(
            "INSERT INTO queue (station, payload, t, size) VALUES (?, ?, ?, ?)",
            (station, payload, time.time(), len(payload)),
        )
        self.count += 1
        self.bytes += len(payload)

    def after(self, last_id: int, limit: int) -> list[tuple[int, str, str, float]]:
        """Up to ``limit`` queued verdicts after ``last_id``: (id, station, payload, enqueued at)."""
        query = "SELECT id, station, payload, t FROM queue WHERE id > ? ORDER BY id LIMIT ?"
        return self._db.execute(query, (last_id, limit)).fetchall()

    def remove(self, item_id: int) -> None:
        self._begin()
        row = self._db.execute("DELETE FROM queue WHERE id = ? RETURNING size", (item_id,)).fetchone()
        if row is not None:
            self.count -= 1
            self.bytes -= row[0]

    def bound(self) -> int:
        """Drop what is past the bounds (oldest first); returns how many were dropped now."""
        self._begin()
        dropped = self._db.execute(
            "DELETE FROM queue WHERE t < ? RETURNING size", (time.time() - self.max_age_s,)
        ).fetchall()
        while self.bytes - sum(size for (size,) in dropped) > self.max_bytes:
            oldest = self._db.execute(
                "DELETE FROM queue WHERE id = (SELECT min(id) FROM queue) RETURNING size"
            ).fetchone()
            if oldest is None:
                break
            dropped.append(oldest)
        self.count -= len(dropped)
        self.bytes -= sum(size for (size,) in dropped)
        self.dropped += len(dropped)
        return len(dropped)

    def meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: int) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def commit(self) -> None:
        if self._in_transaction:
            self._db.execute("COMMIT")
            self._in_transaction = False

    def close(self) -> None:
        self.commit()
        self._db.close()

    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True


def station_state(view: StationView) -> dict:
    """What a station's retained state topic says."""
    last = view.last or {}
    counters = {"pass": view.passed, "fail": view.failed, "error": view.errors, "missed": view.missed}
    return {
        "station": view.name,
        "state": view.state,
        "health": view.health,
        "counters": counters,
        "recipe": view.recipe or None,
        "model": last.get("model"),
        "run_id": view.run_id,
        "last_seq": last.get("seq"),
        "t_ns": time.time_ns(),
    }


class JsonTopics:
    """The JSON format: the verdict messages as they are, retained states, and the bridge's will."""

    def __init__(self, settings: MqttSettings) -> None:
        self.prefix, self.node = settings.prefix, settings.node

    def resume(self, store: DiskQueue) -> None:
        """At start: what the format keeps across restarts (nothing)."""

    def connected_as(self, store: DiskQueue) -> None:
        """A connection is up (nothing to note)."""

    def will(self) -> tuple[str, bytes, bool]:
        return self._bridge_topic(), json.dumps({"state": "offline"}).encode(), True

    def connected(self, states: dict[str, dict]) -> list[tuple[str, bytes, bool]]:
        """Sent first on every connection: the bridge online, then every station's state."""
        online = json.dumps({"state": "online", "stations": sorted(states), "t_ns": time.time_ns()}).encode()
        return [(self._bridge_topic(), online, True), *(self.state_changed(state)[0] for state in states.values())]

    def state_changed(self, state: dict) -> list[tuple[str, bytes, bool]]:
        return [(f"{self.prefix}/{state['station']}/state", json.dumps(state).encode(), True)]

    def verdict(self, station: str, verdict: str, historical: bool) -> list[tuple[str, bytes]]:
        return [(f"{self.prefix}/{station}/verdict", verdict.encode())]

    def command_topic(self) -> str | None:
        return None  # nothing to listen to

    def closing(self) -> list[tuple[str, bytes, bool]]:
        return [self.will()]

    def _bridge_topic(self) -> str:
        return f"{self.prefix}/bridge/{self.node}"


class MqttOutput:
    """The MQTT client for all stations: a worker thread owns the queue and sends; paho's thread does the I/O."""

    name = "mqtt"

    def __init__(self, settings: MqttSettings, views: list[StationView], metrics=None) -> None:
        self.settings, self.metrics = settings, metrics
        self.scheme, self.host, self.port = broker(settings.address)
        if settings.format == "sparkplug":
            from edge.bridge.sparkplug import SparkplugTopics

            self.topics = SparkplugTopics(settings)
        else:
            self.topics = JsonTopics(settings)
        self.views = {view.name: view for view in views}
        self.connected = False
        self.published = self.dropped_total = 0
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._queue: DiskQueue | None = None
        self._client = None  # this connection's client (the worker replaces it when the connection is lost)
        self._thread = threading.Thread(target=self._work, name="mqtt", daemon=True)
        self._states: dict[str, dict] = {}

    # -- the Output protocol (the bridge's asyncio loop) -----------------------------------------------------
    async def start(self) -> None:
        if paho is None:
            raise MqttError("paho-mqtt is not installed: pip install 'edge-inspect[bridge]'")
        settings = self.settings
        self._queue = DiskQueue(Path(settings.queue), int(settings.queue_mb * 1e6), settings.queue_hours * 3600)
        if self._queue.count:
            log.info("MQTT: %d verdicts from before the restart wait in %s", self._queue.count, settings.queue)
        self.topics.resume(self._queue)
        for view in self.views.values():
            self._states[view.name] = station_state(view)
        self._client = self._new_client()
        self._thread.start()
        log.info("MQTT to %s://%s:%d as %s (%s)", self.scheme, self.host, self.port, settings.node, settings.format)

    async def verdict(self, view: StationView) -> None:
        self._inbox.put(("verdict", view.name, json.dumps(view.last)))
        self._inbox.put(("state", view.name, station_state(view)))

    async def current(self, view: StationView) -> None:
        self._inbox.put(("state", view.name, station_state(view)))

    async def status(self, view: StationView) -> None:
        self._inbox.put(("state", view.name, station_state(view)))

    def tick(self) -> None:
        pass

    def clients(self) -> int:
        return int(self.connected)

    def metric_families(self) -> list:
        published = CounterMetricFamily("edge_bridge_mqtt_published", "Verdicts the broker acknowledged")
        published.add_metric([], self.published)
        queued = GaugeMetricFamily("edge_bridge_mqtt_queued", "Verdicts waiting for the broker (on disk)")
        queued.add_metric([], self._queue.count if self._queue else 0)
        dropped = CounterMetricFamily("edge_bridge_mqtt_dropped", "Verdicts dropped past the queue's bounds")
        dropped.add_metric([], self.dropped_total)
        connected = GaugeMetricFamily("edge_bridge_mqtt_connected", "1 while connected to the broker")
        connected.add_metric([], int(self.connected))
        return [published, queued, dropped, connected]

    def station_summary(self, station: str) -> str:
        return ""

    async def stop(self) -> None:
        self._inbox.put(("stop", None))
        self._thread.join(timeout=10)
        if self._queue is not None:
            log.info("MQTT: %d published, %d still queued, %d dropped", self.published, self._queue.count,
                     self.dropped_total)  # fmt: skip
            self._queue.close()

    # -- one client per connection: a lost connection's unacknowledged verdicts are sent again by the worker,
    # freshly encoded (Sparkplug numbers every message of a session), never replayed by paho ----------------
    def _new_client(self):
        settings = self.settings
        if hasattr(paho, "CallbackAPIVersion"):  # paho-mqtt 2
            client = paho.Client(paho.CallbackAPIVersion.VERSION1, client_id=settings.node, clean_session=True)
        else:
            client = paho.Client(client_id=settings.node, clean_session=True)
        if settings.username:
            password = Path(settings.password_file).read_text().strip() if settings.password_file else None
            client.username_pw_set(settings.username, password)
        if self.scheme == "mqtts":
            try:
                client.tls_set(ca_certs=settings.ca, certfile=settings.certificate, keyfile=settings.private_key)
            except (OSError, ValueError) as exc:
                raise MqttError(f"MQTT TLS: {exc}") from exc
        client.max_inflight_messages_set(WINDOW)
        client.reconnect_delay_set(0.5, 5)
        client.on_connect = lambda c, u, flags, code: self._inbox.put(("connected", c, code))
        client.on_disconnect = lambda c, u, code: self._inbox.put(("disconnected", c, code))
        client.on_publish = lambda c, u, mid: self._inbox.put(("acked", c, mid))
        client.on_message = lambda c, u, message: self._inbox.put(("command", c, message.payload))
        topic, payload, retain = self.topics.will()
        client.will_set(topic, payload, qos=1, retain=retain)
        client.connect_async(self.host, self.port, keepalive=10)
        client.loop_start()
        return client

    # -- the worker ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        store = self._queue
        in_flight: dict[int, tuple[int, int]] = {}  # mid → (queue id, the verdict's t_publish_ns)
        sent_up_to = 0  # the last queue id handed to this connection's client
        connected_at = 0.0
        last_bound = 0.0
        published_states: dict[str, dict] = {}  # what the state topics say now
        dirty: set[str] = set()  # stations whose counters moved since
        while True:
            try:
                item = self._inbox.get(timeout=0.05)
            except queue.Empty:
                item = None
            while item is not None:
                kind, client = item[0], self._client
                if kind == "stop":
                    self._close(client, store)
                    return
                if kind == "verdict":
                    store.append(item[1], item[2])
                elif kind == "state":
                    self._states[item[1]] = item[2]
                    if _identity(item[2]) != _identity(published_states.get(item[1])):
                        dirty.discard(item[1])  # a new state, health, recipe or run: at once
                        if self.connected:
                            published_states[item[1]] = item[2]
                            for topic, payload, retain in self.topics.state_changed(item[2]):
                                client.publish(topic, payload, qos=1, retain=retain)
                    else:
                        dirty.add(item[1])  # only the counters moved: with the next second's
                elif item[1] is not client:
                    pass  # from a client replaced since
                elif kind == "acked" and item[2] in in_flight:
                    queue_id, t_publish_ns = in_flight.pop(item[2])
                    store.remove(queue_id)
                    self.published += 1
                    if self.metrics is not None and t_publish_ns:
                        self.metrics.written("mqtt", t_publish_ns)
                elif kind == "connected" and item[2] != 0:
                    reason = paho.connack_string(item[2])
                    log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason)
                elif kind == "connected":
                    self.connected, connected_at, sent_up_to = True, time.time(), 0
                    in_flight.clear()
                    self.topics.connected_as(store)
                    log.info("MQTT connected to %s:%d; %d verdicts queued", self.host, self.port, store.count)
                    if command := self.topics.command_topic():
                        client.subscribe(command, qos=1)
                    for topic, payload, retain in self.topics.connected(self._states):
                        client.publish(topic, payload, qos=1, retain=retain)
                    published_states = dict(self._states)
                elif kind == "command" and self.topics.asks_rebirth(item[2]):
                    log.info("MQTT: a Sparkplug host asked for a rebirth")
                    for topic, payload, retain in self.topics.connected(self._states):
                        client.publish(topic, payload, qos=1, retain=retain)
                elif kind == "disconnected":
                    if self.connected:
                        log.warning("MQTT broker %s:%d lost (%s): verdicts queue on disk", self.host, self.port,
                                    item[2])  # fmt: skip
                    self.connected = False
                    in_flight.clear()
                    client.loop_stop()
                    self._client = self._new_client()
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            if time.monotonic() - last_bound > 1.0:
                last_bound = time.monotonic()
                for name in list(dirty) if self.connected else []:
                    published_states[name] = self._states[name]
                    for topic, payload, retain in self.topics.state_changed(self._states[name]):
                        self._client.publish(topic, payload, qos=1, retain=retain)
                dirty.clear()
                if dropped := store.bound():
                    self.dropped_total += dropped
                    log.warning("MQTT queue past its bounds: the %d oldest verdicts dropped", dropped)
            if self.connected and len(in_flight) < WINDOW:
                for queue_id, station, payload, enqueued in store.after(sent_up_to, WINDOW - len(in_flight)):
                    for topic, body in self.topics.verdict(station, payload, historical=enqueued < connected_at):
                        info = self._client.publish(topic, body, qos=1)  # the last is the verdict itself
                    in_flight[info.mid] = (queue_id, json.loads(payload).get("t_publish_ns", 0))
                    sent_up_to = queue_id
            store.commit()

    def _close(self, client, store: DiskQueue) -> None:
        """Say goodbye where connected (the will is for a bridge that dies), keep the queue for the next start."""
        if self.connected:
            for topic, payload, retain in self.topics.closing():
                client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(2)
        client.disconnect()
        client.loop_stop()
        store.commit()


WINDOW = 100  # verdicts sent and not yet acknowledged, at most


def _identity(state: dict | None) -> tuple | None:
    """What makes a state news at once (the counters alone wait for the next second)."""
    if state is None:
        return None
    return state["state"], state["health"], state["recipe"], state["run_id"], state["model"]


register_output(
    OutputKind(
        name="mqtt",
        summary="MQTT to the plant's broker: verdicts (QoS 1, stored and forwarded), retained states, a will",
        settings=MqttSettings,
        build=lambda settings, views, metrics: MqttOutput(settings, views, metrics),
    )
)
