"""The ledger behind "every captured frame gets exactly one verdict": each frame is counted in when captured and
settled when its verdict is published; the run ends only when every counted frame is settled."""

from __future__ import annotations

import queue
import threading
import time

from edge.recipes import Recipe
from edge.sources import Frame
from edge.verdict import Counters, Job


class Ledger:
    """Frames counted in and not yet published (capture writes, publishing settles, both under one lock)."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.captured = 0  # frames counted so far: the next frame's index
        self._open: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._closed = False

    def enter(self, frame: Frame, recipe: Recipe, outbox: queue.Queue) -> Job | None:
        """Count ``frame`` and open its job under ``recipe``, to come back to ``outbox`` (its line's publishing
        queue); None once the ledger is closed (a stuck run's end)."""
        with self._lock:
            if self._closed:
                return None
            recipe.enter()
            job = Job(self.captured, frame, t_queued=time.perf_counter(), recipe=recipe, outbox=outbox)
            self._open[job.index] = job
            self.captured += 1
            self.counters.count_frame(frame)
        return job

    def settle(self, index: int) -> None:
        """The frame at ``index`` has its verdict."""
        self._open.pop(index, None)

    def get(self, index: int) -> Job | None:
        """The open job at ``index``, or None."""
        return self._open.get(index)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> dict[int, Job]:
        """Count no more frames; returns the jobs still open."""
        with self._lock:
            self._closed = True
            return dict(self._open)
