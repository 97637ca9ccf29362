"""Following one station: a thread with its own subscriber (:class:`edge.client.VerdictSubscriber`) that hands
validated events to the bridge's event loop.

Late joining without gaps or repeats: the subscription is made first and the first message awaited (so the
stream is flowing), then the snapshot socket is asked for the station's status and last verdict; verdicts of
that run up to the snapshot's last one are then skipped from the stream. A bridge restarted in the middle of a
run therefore shows the station's current values at once, and neither repeats a verdict nor invents one.
Malformed messages are counted and skipped; heartbeats missing for ``offline_heartbeats`` intervals give
:class:`~edge.bridge.station.LinkDown`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.bridge.config import StationLink
from edge.bridge.station import LinkDown, Received, Snapshot
from edge.client import NoAnswer, VerdictSubscriber, request

log = logging.getLogger(__name__)

POLL_S = 0.1


def valid(kind: str, payload: dict) -> bool:
    """Whether a message has what the bridge shows, with the right types."""
    if not isinstance(payload.get("run_id"), str):
        return False
    if kind == "heartbeat":
        return isinstance(payload.get("health"), str)
    if kind != "verdict":
        return kind == "status"
    numbers = all(payload.get(k) is None or _number(payload[k]) for k in ("score", "threshold"))
    integers = all(_integer(payload.get(k)) for k in ("seq", "frame_id", "t_capture_ns", "t_publish_ns"))
    reason = payload.get("reason") is None or isinstance(payload["reason"], str)
    verdict = payload.get("verdict") in ("pass", "fail", "error")
    return numbers and integers and reason and verdict and payload["seq"] >= 0


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class StationFeed:
    """Receives one station's messages on its own thread; ``deliver`` (thread-safe) gets the events."""

    def __init__(
        self,
        link: StationLink,
        deliver: Callable[[str, object], None],
        offline_heartbeats: int = 3,
        metrics=None,
    ) -> None:
        self.link, self.deliver, self.offline_heartbeats = link, deliver, offline_heartbeats
        self.metrics = metrics
        self.malformed = 0
        self._stop = threading.Event()
        self._subscriber = VerdictSubscriber(link.verdicts, link.name, curve=link.curve())
        self._thread = threading.Thread(target=self._run, name=f"feed-{link.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._subscriber.close()

    def _run(self) -> None:
        state = self._subscriber.state
        first = None
        while first is None and not self._stop.is_set():  # the stream is flowing before the snapshot is asked
            first = next(self._subscriber.messages(timeout_s=POLL_S), None)
        skip_to = self._snapshot()
        counted = [state.missing, state.malformed]
        link_down = False
        pending = [first] if first is not None else []
        while not self._stop.is_set():
            for kind, payload in pending or self._subscriber.messages(timeout_s=POLL_S):
                missed, counted[0] = state.missing - counted[0], state.missing
                if kind == "heartbeat":
                    link_down = False
                if skip_to is not None and kind == "verdict" and payload.get("run_id") == skip_to[0]:
                    if payload.get("seq", -1) <= skip_to[1]:
                        continue  # already shown from the snapshot
                    skip_to = None
                self._count(kind, payload, missed)
                if self._stop.is_set():
                    break
            pending = []
            if state.malformed != counted[1]:
                self._malformed(state.malformed - counted[1])
                counted[1] = state.malformed
            if not link_down and self._subscriber.link_down(self.offline_heartbeats):
                link_down = True
                log.warning("%s: no heartbeat for %d intervals: offline", self.link.name, self.offline_heartbeats)
                self.deliver(self.link.name, LinkDown())

    def _count(self, kind: str, payload: dict, missed: int) -> None:
        if not valid(kind, payload):
            self._malformed(1)
            return
        if self.metrics is not None:
            self.metrics.received(self.link.name, kind, missed)
        self.deliver(self.link.name, Received(kind, payload, missed, time.time_ns()))

    def _malformed(self, count: int) -> None:
        self.malformed += count
        log.warning("%s: %d malformed message(s) skipped", self.link.name, count)
        if self.metrics is not None:
            self.metrics.malformed(self.link.name, count)

    def _snapshot(self) -> tuple[str, int] | None:
        """Ask the station's snapshot socket; returns (run_id, seq) up to which the stream repeats it."""
        if not self.link.snapshot or self._stop.is_set():
            return None
        try:
            answer = request(self.link.snapshot, {"last": 1}, timeout_s=2.0, curve=self.link.curve())
            status, verdicts = answer["status"], answer["verdicts"]
            last = verdicts[-1] if verdicts else None
            if not isinstance(status, dict) or (last is not None and not valid("verdict", last)):
                raise ValueError("not a snapshot")
        except (NoAnswer, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: no snapshot from %s (%s): the stream only", self.link.name, self.link.snapshot, exc)
            return None
        self.deliver(self.link.name, Snapshot(status, last))
        seq = last["seq"] if last is not None else int(status.get("last_seq", -1))
        log.info("%s: resumed from the snapshot at seq %d", self.link.name, seq)
        return status.get("run_id"), seq
