"""Following one station: a thread with its own subscriber (:class:`edge.client.VerdictSubscriber`) that hands
validated events to the bridge's event loop.

Late joining without gaps or repeats: the subscription is made first and its first message awaited, which fixes
where the received stream begins (that verdict's seq, or the one after a heartbeat's ``last_seq``). Then the
snapshot socket is asked for the station's status and last verdict: what came before the stream (the last
verdict, the counters) is shown from it, what the stream carries is left to the stream. A bridge restarted in the
middle of a run therefore shows the station's current values at once, and neither repeats a verdict nor
invents one. Malformed messages are counted and skipped; heartbeats missing for ``offline_heartbeats``
intervals give :class:`~edge.bridge.station.LinkDown`.
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
        self._unshown = 0  # verdicts not shown since the last good one (malformed, or lost before those)
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
        try:
            self._follow()
        except Exception as exc:  # a feed that stops must not leave its station looking alive
            log.error("%s: following stopped: %s", self.link.name, exc)
            self.deliver(self.link.name, LinkDown())

    def _follow(self) -> None:
        state = self._subscriber.state
        first = None
        while first is None and not self._stop.is_set():  # the stream is flowing before the snapshot is asked
            first = next(self._subscriber.messages(timeout_s=POLL_S), None)
        if first is not None:
            kind, payload = first
            self._snapshot(state.run_id, payload["seq"] if kind == "verdict" else state.expected_seq)
        counted = [state.missing, state.malformed]
        link_down = False
        pending = [first] if first is not None else []
        while not self._stop.is_set():
            for kind, payload in pending or self._subscriber.messages(timeout_s=POLL_S):
                missed, counted[0] = state.missing - counted[0], state.missing
                if kind == "heartbeat":
                    link_down = False
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
            self._unshown += missed + (kind == "verdict")  # a gap in what clients see: missed, with the next one
            return
        if kind == "verdict":
            missed, self._unshown = missed + self._unshown, 0
        if self.metrics is not None:
            self.metrics.received(self.link.name, kind, missed)
        self.deliver(self.link.name, Received(kind, payload, missed, time.time_ns()))

    def _malformed(self, count: int) -> None:
        self.malformed += count
        log.warning("%s: %d malformed message(s) skipped", self.link.name, count)
        if self.metrics is not None:
            self.metrics.malformed(self.link.name, count)

    def _snapshot(self, run_id: str | None, stream_from: int) -> None:
        """Ask the snapshot socket for what came before seq ``stream_from`` of run ``run_id``."""
        if not self.link.snapshot or self._stop.is_set():
            return
        try:
            answer = request(self.link.snapshot, {"last": 1}, timeout_s=2.0, curve=self.link.curve())
            status, verdicts = answer["status"], answer["verdicts"]
            last = verdicts[-1] if verdicts else None
            if not isinstance(status, dict) or (last is not None and not valid("verdict", last)):
                raise ValueError("not a snapshot")
            last_seq = int(status.get("last_seq", -1))
        except (NoAnswer, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: no snapshot from %s (%s): the stream only", self.link.name, self.link.snapshot, exc)
            return
        if status.get("run_id") != run_id:
            return  # the station restarted in between: the stream is all there is of this run
        earlier = last if last is not None and last["seq"] < stream_from else None
        counters = status.get("counters") if last_seq < stream_from else None  # else the next heartbeat's
        self.deliver(self.link.name, Snapshot(run_id, status.get("health"), counters, earlier))
        log.info("%s: joined at seq %d; the snapshot shows seq %s", self.link.name, stream_from, last and last["seq"])
