"""The station's watchdog: a live source silent, or one inference running, longer than the stall limit means
the station is not making progress (health ``degraded``; a hung inference also stops feeding systemd's
watchdog)."""

from __future__ import annotations

import time


class Watchdog:
    """Told when frames arrive and inferences start and end (``perf_counter`` seconds), says whether the
    station has stalled."""

    def __init__(self, stall_s: float, live: bool) -> None:
        self.stall_s, self.live = stall_s, live
        self._last_frame = time.perf_counter()
        self._busy_since: float | None = None  # when the running inference started

    def frame_arrived(self, at: float) -> None:
        """A frame came from the source at ``at``."""
        self._last_frame = at

    def inference_started(self, at: float) -> None:
        """An inference started at ``at``."""
        self._busy_since = at

    def inference_ended(self) -> None:
        """The running inference returned or raised."""
        self._busy_since = None

    def inference_hung(self) -> bool:
        """One inference has run longer than the stall limit."""
        busy = self._busy_since
        return busy is not None and time.perf_counter() - busy > self.stall_s

    def stalled(self) -> str | None:
        """Why the station is not making progress, or None."""
        now = time.perf_counter()
        if self.live and now - self._last_frame > self.stall_s:
            return f"no frames for {now - self._last_frame:.0f} s"
        busy = self._busy_since
        if busy is not None and now - busy > self.stall_s:
            return f"inference running for {now - busy:.0f} s"
        return None
