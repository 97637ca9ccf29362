"""A clock that ticks like a free-running camera: one tick per period, a late tick at once, never a burst to catch
up (the sources' own pacing, and ``edge-bench``'s engine alone paced like the line)."""

from __future__ import annotations

import time


class Pacer:
    """Ticks at ``fps``; with ``fps`` 0 it never waits."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._due: float | None = None

    def restart(self) -> None:
        """The next tick one period from now (a camera just opened)."""
        self._due = time.perf_counter()

    def wait(self) -> None:
        """Sleep until the next tick; the first tick goes at once."""
        if not self.period:
            return
        now = time.perf_counter()
        self._due = now if self._due is None else max(self._due + self.period, now)
        time.sleep(max(0.0, self._due - now))
