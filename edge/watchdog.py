"""The station's watchdog: whether each stage is making progress.

Two kinds of trouble, told apart because they call for different things:

* **quiet** (health ``degraded``, the service watchdog still fed): a live source silent for the stall limit. A
  triggered line without parts is silent too; nothing is wrong with the station.
* **stuck** (health ``degraded``, the service watchdog no longer fed, so systemd restarts the station): a stage has
  stopped moving: one inference running longer than the stall limit, a read from the source that has not returned
  (a source's read returns within its timeout), or the oldest frame in flight waiting that long while no verdict
  was published at all.
"""

from __future__ import annotations

import time

READ_TIMEOUT_S = 0.2  # how long the capture stage asks a source to wait for a frame


class Watchdog:
    """Told when frames arrive, reads return, inferences start and end and verdicts go out (``perf_counter``
    seconds); says whether the station is quiet or stuck."""

    def __init__(self, stall_s: float, live: bool) -> None:
        self.stall_s, self.live = stall_s, live
        now = time.perf_counter()
        self._last_frame = self._last_verdict = now
        self._reading_since: float | None = None  # when the read in progress began
        self._busy_since: float | None = None  # when the running inference started

    def frame_arrived(self, at: float) -> None:
        """A frame came from the source at ``at``."""
        self._last_frame = at

    def read_started(self, at: float) -> None:
        """The capture stage asked the source for a frame at ``at``."""
        self._reading_since = at

    def read_ended(self) -> None:
        """The source's read returned or raised."""
        self._reading_since = None

    def inference_started(self, at: float) -> None:
        """An inference started at ``at``."""
        self._busy_since = at

    def inference_ended(self) -> None:
        """The running inference returned or raised."""
        self._busy_since = None

    def verdict_published(self, at: float) -> None:
        """A verdict went out at ``at``."""
        self._last_verdict = at

    def stuck(self, oldest_waiting_since: float | None = None) -> str | None:
        """Why a stage has stopped moving, or None; ``oldest_waiting_since``: when the oldest frame without a
        verdict was captured (None: none waits)."""
        now = time.perf_counter()
        busy, reading = self._busy_since, self._reading_since
        if busy is not None and now - busy > self.stall_s:
            return f"inference running for {now - busy:.0f} s"
        if reading is not None and now - reading > self.stall_s + READ_TIMEOUT_S:
            return f"a read from the source has not returned for {now - reading:.0f} s"
        if (
            oldest_waiting_since is not None
            and now - oldest_waiting_since > self.stall_s
            and now - self._last_verdict > self.stall_s
        ):
            return f"no verdict for {now - self._last_verdict:.0f} s with frames waiting"
        return None

    def stalled(self, oldest_waiting_since: float | None = None) -> str | None:
        """Why the station is not making progress (stuck, or a live source quiet), or None."""
        stuck = self.stuck(oldest_waiting_since)
        if stuck:
            return stuck
        now = time.perf_counter()
        if self.live and now - self._last_frame > self.stall_s:
            return f"no frames for {now - self._last_frame:.0f} s"
        return None
