"""The inference stage: batches queued frames up to the engine's max batch, waiting at most ``batch_timeout_ms``
for a batch to fill, and runs the engine of each frame's recipe (a batch never mixes engines: after a recipe
switch the old engine's frames go first). One inference stage can serve several cameras' lines (a multi-camera
station: one engine, batches filled across cameras): each job goes back to its own line's publishing queue, and
the stage ends after every line's :class:`End`. Every frame leaves with its outputs or an error, whatever the
engine does:
one that raises gives ``error(engine_error)``, outputs unlike the sidecar's shapes and dtypes
(:class:`~edge.engines.InvalidOutput`) ``error(invalid_output)``."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass

from edge.engines import Engine, InvalidOutput
from edge.verdict import Job
from edge.watchdog import Watchdog


@dataclass(frozen=True)
class End:
    """No more frames from one line: ``total`` were captured (sent by capture, passed on by inference to
    ``outbox``, that line's publishing queue)."""

    total: int
    outbox: queue.Queue


class Inference:
    """Thread target :meth:`run`: jobs from ``inbox`` → their recipe's engine → their line's ``outbox``, until the
    :class:`End` of each of ``lines`` lines has been passed on. Each line :meth:`attach` es its watchdog."""

    def __init__(self, inbox: queue.Queue, max_batch: int = 1, batch_timeout_ms: float = 2.0, lines: int = 1) -> None:
        self.inbox, self.lines = inbox, lines
        self.max_batch, self.batch_timeout_ms = max_batch, batch_timeout_ms
        self.watchdogs: list[Watchdog] = []
        self.last_error_at = -1e9  # perf_counter of the last engine failure

    def attach(self, watchdog: Watchdog) -> None:
        """A line's watchdog, told when each batch starts and ends."""
        self.watchdogs.append(watchdog)

    def run(self) -> None:
        ended, carried = 0, None
        while ended < self.lines:
            first = carried if carried is not None else self.inbox.get()
            carried = None
            if isinstance(first, End):
                first.outbox.put(first)
                ended += 1
                continue
            batch, engine = [first], first.recipe.engine
            limit = min(self.max_batch, engine.frame.max_batch)
            deadline = time.perf_counter() + self.batch_timeout_ms / 1e3
            while len(batch) < limit:
                try:
                    item = self.inbox.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if isinstance(item, End) or item.recipe.engine is not engine:  # the next batch starts with it
                    carried = item
                    break
                batch.append(item)
            self._run_batch(engine, batch)

    def _run_batch(self, engine: Engine, batch: list[Job]) -> None:
        """Infer one batch; every job leaves with its outputs or an error."""
        started = time.perf_counter()
        for watchdog in self.watchdogs:
            watchdog.inference_started(started)
        error, detail = None, ""
        try:
            result = engine.infer([job.frame.pixels for job in batch])  # gathered into the engine's buffer
            outputs = [(float(result.score[i]), result.anomaly_map[i, 0]) for i in range(len(batch))]
        except Exception as exc:  # any engine failure is a verdict, not a crash
            error = "invalid_output" if isinstance(exc, InvalidOutput) else "engine_error"
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.last_error_at = time.perf_counter()
        ended = time.perf_counter()
        for watchdog in self.watchdogs:
            watchdog.inference_ended()
        for i, job in enumerate(batch):
            job.t_infer_start, job.t_infer_end, job.batch = started, ended, len(batch)
            if error is None:
                job.score, job.anomaly_map = outputs[i]
            else:
                job.error, job.detail = error, detail
            job.outbox.put(job)

    def depth(self) -> int:
        """Frames waiting for inference now."""
        return self.inbox.qsize()
