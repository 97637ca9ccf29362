"""The snapshot socket (REQ/REP) for late joiners: the station's status and its last N verdicts, after which a
subscriber follows ``seq`` on the verdict topic without missing anything in between."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable

import zmq

from edge.security import CurveServer, SecurityError

log = logging.getLogger(__name__)


class SnapshotError(Exception):
    """The snapshot socket cannot be set up."""


class SnapshotServer:
    """Answers ``{"last": N}`` with ``{"status": {...}, "verdicts": [...]}`` from its own thread and socket."""

    name, required = "snapshot", False

    def __init__(self, endpoint: str, status: Callable[[], dict], keep: int = 100, curve: CurveServer | None = None):
        self.verdicts: deque[dict] = deque(maxlen=keep)
        self._status, self._stop = status, threading.Event()
        self._socket = zmq.Context.instance().socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            if curve is not None:
                curve.apply(self._socket)
            self._socket.bind(endpoint)
        except (zmq.ZMQError, SecurityError) as exc:
            self.close()
            raise SnapshotError(f"cannot serve snapshots on {endpoint}: {exc}") from exc
        self._thread = threading.Thread(target=self._serve, name="snapshot", daemon=True)
        self._thread.start()

    def write(self, verdict: dict, job) -> None:
        """A pipeline sink: keep the verdict (deque appends are thread-safe)."""
        self.verdicts.append(verdict)

    def flush(self) -> None:
        pass

    def _answer(self, request: bytes) -> dict:
        try:
            asked = json.loads(request or b"{}")
            last = int(asked.get("last", self.verdicts.maxlen)) if isinstance(asked, dict) else None
        except (ValueError, TypeError):
            last = None
        if last is None or not 0 <= last <= self.verdicts.maxlen:
            return {"error": f'send {{"last": N}} with 0 ≤ N ≤ {self.verdicts.maxlen}'}
        verdicts = list(self.verdicts)
        return {"status": self._status(), "verdicts": verdicts[len(verdicts) - last :] if last else []}

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(200):
                continue
            request = self._socket.recv()
            answer = self._answer(request)
            log.info("snapshot request %r answered%s", request[:100], " with an error" if "error" in answer else "")
            self._socket.send(json.dumps(answer).encode())

    def close(self) -> None:
        self._stop.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=2)
        self._socket.close(0)
