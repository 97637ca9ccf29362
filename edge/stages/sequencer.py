"""The sequencer: hands jobs on in capture order (a reorder buffer: errors overtake nothing). A frame still
without a result at its deadline gets ``error(deadline)`` in its turn; its result, when it comes, is dropped and
counted (``late_results``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from edge.stages.ledger import Ledger
from edge.verdict import Job

log = logging.getLogger(__name__)


class Sequencer:
    """Jobs in (any order) → jobs out in capture order, the head of the line being :attr:`next_index`."""

    def __init__(self, ledger: Ledger, deadline_ms: float | None = None) -> None:
        self.ledger, self.deadline_ms = ledger, deadline_ms
        self.next_index = 0
        self.late_results = 0
        self._late_reported = (float("-inf"), 0)  # when the last warning went out, and late_results then
        self._pending: dict[int, Job] = {}
        self._expired: set[int] = set()  # given error(deadline); their results come late

    def add(self, job: Job) -> None:
        """A job with its outputs or its error."""
        if job.index in self._expired:
            self._expired.discard(job.index)
            self.late_results += 1
            reported_at, reported = self._late_reported
            if time.monotonic() - reported_at >= 60:  # at most one warning a minute, however many come late
                log.warning(
                    "%d result(s) came after their frame's deadline and were discarded (the last: frame %d)",
                    self.late_results - reported,
                    job.frame.frame_id,
                )
                self._late_reported = (time.monotonic(), self.late_results)
        else:
            self._pending[job.index] = job

    def ready(self) -> Iterator[Job]:
        """The jobs that can go on now, in capture order."""
        while True:
            index = self.next_index
            job = self._pending.pop(index, None) or self._expire(index)
            if job is None:
                return
            self.next_index = index + 1
            yield job

    def _expire(self, index: int) -> Job | None:
        """``error(deadline)`` for the frame at ``index`` if its deadline has passed without a result."""
        held = self.ledger.get(index)
        if self.deadline_ms is None or held is None or (time.perf_counter() - held.t_queued) * 1e3 < self.deadline_ms:
            return None
        self._expired.add(index)
        detail = f"no result in {self.deadline_ms:.0f} ms"
        return Job(index, held.frame, t_queued=held.t_queued, error="deadline", detail=detail, recipe=held.recipe)

    def oldest_waiting(self) -> float | None:
        """When the frame at the head of the line was captured; None when none waits."""
        held = self.ledger.get(self.next_index)
        return held.t_queued if held is not None else None

    def abandon(self, reason: str, detail: str) -> list[Job]:
        """A stage is stuck for good: the ledger closes, and every frame counted and not yet handed on comes out
        now, in order: with its result where it has one, else ``error(reason)``."""
        held = self.ledger.close()
        waiting = sorted(set(held) | set(self._pending))
        jobs = [
            self._pending.pop(index, None)
            or Job(
                index, held[index].frame, held[index].t_queued, error=reason, detail=detail, recipe=held[index].recipe
            )
            for index in waiting
        ]
        if waiting:
            self.next_index = waiting[-1] + 1
        return jobs
