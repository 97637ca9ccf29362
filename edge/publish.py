"""The verdict protocol on ZeroMQ: an XPUB socket, multipart ``[topic, JSON]`` messages.

Topics: ``verdict/<station>`` (one per captured frame), ``heartbeat/<station>`` (every second: health and counters),
``status/<station>`` (state changes; the last one of a run is ``stopped`` with ``final: true``),
``heatmap/<station>`` (optional PNG of rejected frames' maps), ``preview/<station>`` (a downscaled JPEG of the
latest judged frame with its map, a few per second, sent only while someone subscribes to it). Verdicts carry
``seq``, counted per run from 0 without gaps, and ``run_id``: a subscriber sees lost messages as a jump in ``seq``
and a restart as a new ``run_id``. The publisher never blocks: at the high-water mark ZeroMQ drops, and the drop
shows as a gap. XPUB lets the publisher see subscriptions arrive, so it can hold capture until subscribers are
connected (ZeroMQ's slow joiner). ``edge/schemas/messages.schema.json`` documents the messages for other languages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid

import zmq

from edge.security import CurveServer, SecurityError

SCHEMA = 1
log = logging.getLogger(__name__)


class PublishError(Exception):
    """The publishing socket cannot be set up."""


def new_run_id() -> str:
    """A run's identity: new at every start, so subscribers see a restart."""
    return uuid.uuid4().hex[:12]


def topic(kind: str, station: str) -> bytes:
    return f"{kind}/{station}".encode()


class VerdictPublisher:
    """Owns the XPUB socket (ZeroMQ sockets belong to one thread: the pipeline's publishing thread)."""

    def __init__(
        self,
        endpoint: str,
        station: str,
        high_water_mark: int = 10000,
        linger_ms: int = 1000,
        curve: CurveServer | None = None,
        run_id: str | None = None,
    ) -> None:
        """``run_id``: shared by the cameras of one station process (default: a new one)."""
        self.endpoint, self.station = endpoint, station
        self.run_id = run_id or new_run_id()
        self.seq = 0
        self.subscribers = 0
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self._socket.setsockopt(zmq.LINGER, linger_ms)
        try:
            if curve is not None:
                curve.apply(self._socket)
        except SecurityError as exc:
            self._socket.close(0)
            raise PublishError(str(exc)) from exc
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close(0)
            hint = " (another edge-run on that port?)" if exc.errno == zmq.EADDRINUSE else ""
            raise PublishError(f"cannot publish on {endpoint}: {exc.strerror}{hint}") from exc
        self._verdict_topic = topic("verdict", station)
        self._preview_topic = topic("preview", station)
        self.preview_wanted = False  # someone subscribes to the preview topic (XPUB tells the last one leaving)

    def poll_subscriptions(self, timeout_ms: int = 0) -> int:
        """Read subscription messages; returns how many verdict subscriptions arrived. Keeps ``subscribers`` and
        ``preview_wanted``."""
        arrived = 0
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            message = self._socket.recv()
            timeout_ms = 0
            if message[1:] and self._preview_topic.startswith(message[1:]):
                self.preview_wanted = message[0] == 1
            elif message and self._verdict_topic.startswith(message[1:]):
                if message[0] == 1:
                    arrived += 1
                    self.subscribers += 1
                elif message[0] == 0:
                    self.subscribers = max(0, self.subscribers - 1)
        return arrived

    def wait_subscribers(self, count: int, timeout_s: float) -> bool:
        """Hold until ``count`` subscribers to this station's verdicts are connected, or the timeout; logs what
        it waits for and, at the timeout, how many came."""
        log.info("waiting up to %g s for %d subscriber(s) to %s", timeout_s, count, self.endpoint)
        started = time.monotonic()
        deadline = started + timeout_s
        while self.subscribers < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%d of %d subscriber(s) connected after %g s: starting anyway; verdicts published before a "
                    "subscriber connects are lost to it (start edge-listen or the PLC first, or raise --wait-timeout)",
                    self.subscribers,
                    count,
                    timeout_s,
                )
                return False
            self.poll_subscriptions(int(min(remaining, 0.1) * 1000) + 1)
        log.info("%d subscriber(s) connected after %.1f s", self.subscribers, time.monotonic() - started)
        return True

    def _send(self, kind: str, payload: dict) -> tuple[dict, bytes]:
        """Send ``payload`` with the fields every message carries; returns the message as sent and its JSON."""
        message = {"schema": SCHEMA, "kind": kind, "station": self.station, "run_id": self.run_id, **payload}
        encoded = json.dumps(message, separators=(",", ":")).encode()
        self._send_parts([topic(kind, self.station), encoded])
        return message, encoded

    def _send_parts(self, parts: list[bytes]) -> None:
        with contextlib.suppress(zmq.Again):  # at the high-water mark: dropped, seen by subscribers as a seq gap
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)

    def verdict(self, payload: dict) -> dict:
        """Publish one verdict; assigns ``seq`` and ``t_publish_ns`` and returns the message as sent."""
        return self.verdict_and_json(payload)[0]

    def verdict_and_json(self, payload: dict) -> tuple[dict, bytes]:
        """:meth:`verdict`, and the message's JSON as sent (serialised once: what the JSON-lines record writes;
        reject records and the other sinks take the message)."""
        payload["seq"] = self.seq
        self.seq += 1
        payload["t_publish_ns"] = time.time_ns()
        return self._send("verdict", payload)

    def heartbeat(self, payload: dict) -> None:
        self._send("heartbeat", {**payload, "last_seq": self.seq - 1, "t_ns": time.time_ns()})

    def status(self, payload: dict) -> None:
        self._send("status", {**payload, "last_seq": self.seq - 1, "t_ns": time.time_ns()})

    def heatmap(self, seq: int, png: bytes) -> None:
        self._send_parts([topic("heatmap", self.station), str(seq).encode(), png])

    def preview(self, header: dict, jpeg: bytes) -> None:
        """A downscaled picture of a judged frame for consoles: ``[topic, JSON header, JPEG]``."""
        self._send_parts([self._preview_topic, json.dumps({**header, "run_id": self.run_id}).encode(), jpeg])

    def close(self, linger_ms: int | None = None) -> None:
        """Close, waiting at most ``linger_ms`` for queued messages to leave."""
        self._socket.close(linger_ms)


def iso_time(ns: int) -> str:
    """ISO-8601 UTC with milliseconds for a wall-clock time in ns."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"
