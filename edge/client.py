"""Subscribing to a station's verdicts: the helper PLC bridges and ``edge-listen`` use.

It follows ``seq`` per publisher run (``run_id``) and counts what went missing, and it tracks heartbeats so a
silent publisher is noticed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from edge.security import apply_client


@dataclass
class LinkState:
    """What a subscriber knows about the link: runs seen, gaps in ``seq``, last heartbeat."""

    run_id: str | None = None
    expected_seq: int = 0
    verdicts: int = 0
    missing: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first missing seq, count)
    malformed: int = 0  # messages that were not the protocol's JSON: counted and skipped
    last_heartbeat: float = 0.0
    heartbeat_interval_s: float = 1.0


class VerdictSubscriber:
    """A SUB socket on one publisher; ``messages()`` yields ``(kind, payload)`` and keeps :class:`LinkState`."""

    def __init__(
        self,
        endpoint: str,
        station: str = "",
        kinds: tuple[str, ...] = ("verdict", "status", "heartbeat"),
        curve: tuple[Path, Path] | None = None,
    ):
        """``curve``: (this client's secret certificate, the station's public certificate) for CURVE."""
        self.endpoint = endpoint
        self._socket = zmq.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            apply_client(self._socket, *curve)
        for kind in kinds:
            self._socket.setsockopt(zmq.SUBSCRIBE, f"{kind}/{station}".encode())
        self._socket.connect(endpoint)
        self.state = LinkState()

    def link_down(self, heartbeats: int = 3) -> bool:
        """True when no heartbeat came for ``heartbeats`` intervals (after one was seen)."""
        last = self.state.last_heartbeat
        return bool(last) and time.monotonic() - last > heartbeats * self.state.heartbeat_interval_s

    def _track(self, kind: str, payload: dict) -> None:
        state = self.state
        if payload.get("run_id") != state.run_id:  # a run met midway (late join) is followed from its first message
            first = int(payload["seq"]) if kind == "verdict" else int(payload.get("last_seq", -1)) + 1
            state.run_id, state.expected_seq = payload.get("run_id"), first
        if kind == "heartbeat":
            state.last_heartbeat = time.monotonic()
            state.heartbeat_interval_s = float(payload.get("interval_s", state.heartbeat_interval_s))
        elif kind == "verdict":
            seq = int(payload["seq"])
            if seq > state.expected_seq:
                state.gaps.append((state.expected_seq, seq - state.expected_seq))
                state.missing += seq - state.expected_seq
            state.expected_seq = seq + 1
            state.verdicts += 1

    def messages(self, timeout_s: float | None = None) -> Iterator[tuple[str, dict]]:
        """Messages as they arrive; stops after ``timeout_s`` seconds without any."""
        while self._socket.poll(None if timeout_s is None else int(timeout_s * 1000)):
            yield from self._receive()

    def poll(self, timeout_s: float) -> list[tuple[str, dict]]:
        """Whatever arrives within ``timeout_s`` (possibly nothing): for loops that also check ``link_down``."""
        return list(self._receive()) if self._socket.poll(int(timeout_s * 1000)) else []

    def _receive(self) -> Iterator[tuple[str, dict]]:
        """Every message waiting now, tracked."""
        while self._socket.poll(0):
            parts = self._socket.recv_multipart()
            kind = parts[0].decode(errors="replace").split("/", 1)[0]
            if kind == "heatmap":
                continue
            try:
                payload = json.loads(parts[1])
                self._track(kind, payload)
            except (IndexError, ValueError, KeyError, TypeError, AttributeError):
                self.state.malformed += 1
                continue
            yield kind, payload

    def close(self) -> None:
        self._socket.close(0)


class NoAnswer(Exception):
    """A REQ/REP request (snapshot, control) that got no answer in time: wrong endpoint, or a key not admitted."""


def request(endpoint: str, payload: dict, timeout_s: float = 5.0, curve: tuple[Path, Path] | None = None) -> dict:
    """Send one JSON request to a station's snapshot or control socket and return its JSON answer."""
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        if curve is not None:
            apply_client(socket, *curve)
        socket.connect(endpoint)
        socket.send(json.dumps(payload).encode())
        if not socket.poll(int(timeout_s * 1000)):
            raise NoAnswer(f"no answer from {endpoint} in {timeout_s:.0f} s (not running there, or key not admitted)")
        return json.loads(socket.recv())
    finally:
        socket.close(0)
