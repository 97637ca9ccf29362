"""What the console knows of each station: the bridge's view of it (:class:`edge.bridge.station.StationView`:
state, counters, last verdict, recipe) kept from its feed, and what the page adds — parts per minute and yield
over the last minute, received → published latency, the degraded reason and drift, the last control change and
who made it, the latest preview, and the station's calibration (asked for once per model)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import zmq

from edge.bridge.config import StationLink
from edge.bridge.feed import StationFeed
from edge.bridge.station import STATES, Received, StationView
from edge.security import apply_client

log = logging.getLogger(__name__)

TREND_S = 60.0  # parts per minute and yield are over this window
LATENCY_KEPT = 1000  # the latest verdicts' received → published latencies the percentiles are of


@dataclass(frozen=True)
class Preview:
    """The latest preview picture: its header (seq, verdict, score, …), JPEG, and a number that counts up."""

    header: dict
    jpeg: bytes
    number: int


class ConsoleStation:
    """One station as the page shows it; fed from its feed thread, read from the web server's (one lock)."""

    def __init__(self, link: StationLink) -> None:
        self.link = link
        self.control = link.sender()
        self.view = StationView(link.name, control=self.control)
        self.preview: Preview | None = None
        self.watchers = 0  # pages showing this station's live view: previews are asked for only while > 0
        self.reason: str | None = None  # why it is degraded, from its status topic
        self.drift: dict | None = None  # the last drift report, while drift is on
        self.change: dict | None = None  # the last control change: command, by, values
        self.calibration: dict | None = None  # {"score": …, "calibration": …} of the model in force
        self._calibration_model: str | None = None
        self._recent: deque[tuple[float, str]] = deque()  # (monotonic s, verdict) within TREND_S
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_KEPT)
        self.lock = threading.Lock()

    def apply(self, event) -> None:
        """An event from the feed (its thread)."""
        with self.lock:
            self.view.apply(event)
            if not isinstance(event, Received):
                return
            payload = event.payload
            if event.kind == "verdict":
                self._recent.append((time.monotonic(), payload["verdict"]))
                if isinstance(payload.get("t_receive_ns"), int):
                    self._latency_ms.append((payload["t_publish_ns"] - payload["t_receive_ns"]) / 1e6)
            elif event.kind == "status":
                self.reason = payload.get("reason") if payload.get("health") not in ("ok", None) else None
                if "drift" in payload:
                    self.drift = payload if payload["drift"] else None
                if isinstance(payload.get("control"), dict):
                    self.change = {**payload["control"], "t_ns": payload.get("t_ns")}
            elif event.kind == "heartbeat" and payload.get("health") == "ok":
                self.reason = None

    def take_state(self, state: dict) -> None:
        """A station's state as a bridge published it on the plant's broker (:mod:`edge.console.broker`)."""
        with self.lock:
            view = self.view
            view.state = state.get("state", view.state) if state.get("state") in STATES else view.state
            view.health = str(state.get("health", view.health))
            counters = state.get("counters") or {}
            if all(isinstance(counters.get(k), int) for k in ("pass", "fail", "error")):
                view.passed, view.failed, view.errors = counters["pass"], counters["fail"], counters["error"]
            view.recipe = state.get("recipe") or ""
            view.current = view.state != "offline" and view.last is not None

    def summary(self) -> dict:
        """The station on the fleet view and at the top of its own page."""
        with self.lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0][0] > TREND_S:
                self._recent.popleft()
            view, recent = self.view, [kind for _, kind in self._recent]
            judged = view.passed + view.failed + view.errors
            latency = np.array(self._latency_ms) if self._latency_ms else None
            last = view.last
            return {
                "name": view.name,
                "state": view.state,
                "health": view.health,
                "reason": self.reason,
                "counters": {"pass": view.passed, "fail": view.failed, "error": view.errors, "missed": view.missed},
                "yield": view.passed / judged if judged else None,
                "parts_per_minute": len(recent) * 60.0 / TREND_S,
                "latency_ms": {
                    "p50": float(np.percentile(latency, 50)) if latency is not None else None,
                    "p99": float(np.percentile(latency, 99)) if latency is not None else None,
                },
                "recipe": view.recipe,
                "last": _verdict_summary(last) if last else None,
                "current": view.current,
                "drift": self.drift,
                "change": self.change,
                "preview": self.preview.number if self.preview else None,
                "controls": self.control is not None,
            }

    def calibration_of(self, model: str | None) -> dict | None:
        """The station's calibration of ``model`` (asked for over its control link the first time: blocking)."""
        if self.control is None or model is None:
            return None
        if model != self._calibration_model:
            answer = self.control({"command": "calibration"})
            if answer.get("ok"):
                self.calibration, self._calibration_model = answer, model
        return self.calibration if model == self._calibration_model else None


def _verdict_summary(verdict: dict) -> dict:
    keys = ("seq", "frame_id", "verdict", "reason", "score", "threshold", "recipe", "model", "time", "regions")
    return {key: verdict.get(key) for key in keys}


class PreviewFeed:
    """A station's preview topic on its own thread: subscribed only while a page watches the station."""

    def __init__(self, station: ConsoleStation) -> None:
        self.station = station
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"preview-{station.link.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        link, station = self.station.link, self.station
        socket = zmq.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, 4)
        if link.curve() is not None:
            apply_client(socket, *link.curve())
        socket.connect(link.verdicts)
        topic = f"preview/{link.name}".encode()
        subscribed, number = False, 0
        try:
            while not self._stop.is_set():
                if (station.watchers > 0) != subscribed:
                    subscribed = not subscribed
                    socket.setsockopt(zmq.SUBSCRIBE if subscribed else zmq.UNSUBSCRIBE, topic)
                if not socket.poll(200):
                    continue
                parts = socket.recv_multipart()
                if len(parts) != 3 or parts[0] != topic:
                    continue
                try:
                    header = json.loads(parts[1])
                except ValueError:
                    continue
                number += 1
                station.preview = Preview(header, parts[2], number)
        finally:
            socket.close(0)


class Fleet:
    """Every station the console follows: those given with their endpoints (each its feed and preview feed), and
    with ``broker`` (``(url, prefix)``) those the plant's broker carries; a context manager (feeds start and stop
    with it)."""

    def __init__(
        self, links: list[StationLink], offline_heartbeats: int = 3, broker: tuple[str, str] | None = None
    ) -> None:
        self.stations = {link.name: ConsoleStation(link) for link in links}
        self._lock = threading.Lock()
        self._feeds: list = [
            StationFeed(station.link, lambda _name, event, s=station: s.apply(event), offline_heartbeats)
            for station in self.stations.values()
        ]
        self._feeds += [PreviewFeed(station) for station in self.stations.values()]
        if broker is not None:
            from edge.console.broker import BrokerFollower

            self._feeds.append(BrokerFollower(self, *broker))

    def all(self) -> list[ConsoleStation]:
        with self._lock:
            return list(self.stations.values())

    def station_for(self, link: StationLink) -> ConsoleStation:
        """The station of that name, added when it is new (stations found on the broker)."""
        with self._lock:
            if link.name not in self.stations:
                self.stations[link.name] = ConsoleStation(link)
            return self.stations[link.name]

    def __enter__(self) -> Fleet:
        for feed in self._feeds:
            feed.start()
        return self

    def __exit__(self, *_) -> None:
        for feed in self._feeds:
            feed.stop()
